"""benchmarks/gpu.py --smoke: every registered model measured on CPU at tiny size, JSON and table written."""

import importlib.util
import json
from pathlib import Path

from pixelzoo.models import registered

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_run_writes_every_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    out = tmp_path / "gpu-cpu-smoke.json"
    gpu.main(["--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["smoke"] and set(result["models"]) == set(registered())
    for m in result["models"].values():
        assert m["train"]["fp32 eager"]["img_per_s"] > 0 and m["train"]["bf16 eager"]["img_per_s"] > 0
        assert m["valid_img_per_s"] > 0 and m["sample_s"] > 0
    assert result["pixelcnn_curve"]["steps"] >= 3 and result["pixelcnn_curve"]["curve"]
    assert "random" in result["pixelcnn_curve"]["data"]
    assert all(v is not None and v > 0 for v in result["gpu_hours"].values())
    assert "| pixelcnn |" in capsys.readouterr().out
