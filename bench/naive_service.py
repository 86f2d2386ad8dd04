"""The naive baseline for bench/serving.py: FastAPI + uvicorn the way the original design lists it.

The TorchScript champion is loaded once at startup with ``torch.jit.load``; each request makes
its own torch call (no batching across requests), and answers JSON with u only (no lineage, no
domain check, no metrics, no serving log). Started by bench/serving.py as

    NAIVE_MODEL_PATH=model.pt NAIVE_TORCH_THREADS=1 \\
        python -m uvicorn naive_service:app --app-dir bench --host 127.0.0.1 --port PORT

i.e. one uvicorn worker with uvicorn's defaults (uvloop and httptools when installed, access
log on).

History and figures: bench/RESULTS.md#serving
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel

torch.set_num_threads(int(os.environ.get("NAIVE_TORCH_THREADS", "1")))
model = torch.jit.load(os.environ["NAIVE_MODEL_PATH"], map_location="cpu")
model.eval()

app = FastAPI(title="naive heat service")


class Points(BaseModel):
    points: list[list[float]]


@app.get("/predict-temperature")
def predict_temperature(x: float, y: float, t: float) -> dict:
    with torch.inference_mode():
        out = model(torch.tensor([[x, y, t]], dtype=torch.float32))
    return {"u": float(out[0, 0])}


@app.post("/predict")
def predict(body: Points) -> dict:
    with torch.inference_mode():
        out = model(torch.tensor(body.points, dtype=torch.float32))
    return {"u": out[:, 0].tolist()}


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}
