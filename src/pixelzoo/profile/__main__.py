from pixelzoo.pipeline.profiles.profile import main

raise SystemExit(main())
