"""The model side of the server: a LitServe ``LitAPI`` that classifies batches of pixel rows in an inference worker."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import litserve as ls
import torch
from PIL import Image

from fashion_conv.predict import SIDE, describe, predict_probabilities


def png_data_url(pixels: torch.Tensor) -> str:
    """A (28, 28) uint8 image as a ``data:image/png;base64,...`` URL, the image as the model saw it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class FashionAPI(ls.LitAPI):
    """Requests are ``{"pixels": [784 ints], "inverted": bool}`` (``front.Front`` makes them); each answer is
    ``predict``'s record: prediction, probability, top classes, plus ``inverted`` and ``image``."""

    def __init__(self, load: Callable[[], Callable], tta_hflip: bool = False, top_k: int = 3, **batching):
        super().__init__(**batching)
        self.load, self.tta_hflip, self.top_k = load, tta_hflip, top_k  # ``load`` runs in the worker, in setup

    def setup(self, device) -> None:
        torch.set_num_threads(1)  # one core per worker: batches are small, and the HTTP processes need the others
        self.model = self.load()

    def decode_request(self, request: dict) -> tuple[torch.Tensor, bool]:
        return torch.tensor(request["pixels"], dtype=torch.uint8).view(SIDE, SIDE), bool(request["inverted"])

    def batch(self, inputs: list[tuple[torch.Tensor, bool]]) -> tuple[torch.Tensor, list[bool]]:
        return torch.stack([pixels for pixels, _ in inputs]), [inverted for _, inverted in inputs]

    def predict(self, batch: tuple[torch.Tensor, list[bool]]) -> list[dict]:
        pixels, inverted = batch  # (B, 28, 28) uint8
        probs = predict_probabilities(self.model, pixels.unsqueeze(1).float().div(255), tta_hflip=self.tta_hflip)
        records = describe([{"inverted": flag} for flag in inverted], probs, None, self.top_k)
        for record, image in zip(records, pixels):
            del record["label"]  # unknown for a served image
            record["image"] = png_data_url(image)
        return records

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output
