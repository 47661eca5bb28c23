from pixelzoo.pipeline.settings import main

raise SystemExit(main())
