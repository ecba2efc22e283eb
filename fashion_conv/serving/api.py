"""The model side of the server: a LitServe ``LitAPI`` that classifies batches of pixel rows in an inference worker."""

from __future__ import annotations

import base64
import signal
from collections.abc import Callable

import litserve as ls
import torch

from fashion_conv.predict import SIDE, describe, predict_probabilities


class FashionAPI(ls.LitAPI):
    """Requests are ``{"row": base64 of 784 bytes, "inverted": bool}`` (``front.Front`` makes them); each answer is
    ``predict``'s record: prediction, probability, top classes, plus ``inverted`` and ``pixels`` (the row as given:
    the image as the model saw it)."""

    def __init__(self, load: Callable[[], Callable], tta_hflip: bool = False, top_k: int = 3, **batching):
        super().__init__(**batching)
        self.load, self.tta_hflip, self.top_k = load, tta_hflip, top_k  # ``load`` runs in the worker, in setup

    async def authorize(self) -> None:
        """No authentication. LitServe runs this for every request; its default is a plain function, which FastAPI
        calls on a thread (about a tenth of the HTTP process's time per request); a coroutine runs in the event loop."""

    def setup(self, device) -> None:
        # Ctrl-C reaches every process of the terminal's group; the main process stops this one in order, after the
        # HTTP processes have answered the requests in flight.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(1)  # one core per worker: batches are small, and the HTTP processes need the others
        self.model = self.load()
        if isinstance(self.model, torch.nn.Module):
            # PyTorch's CPU convolutions and pooling run about twice as fast channels-last at these batch sizes
            # (the cnn at batch 32 on one thread: 0.71 -> 0.37 ms per image); only 4-D weights change layout.
            self.model = self.model.to(memory_format=torch.channels_last)

    def decode_request(self, request: dict) -> tuple[torch.Tensor, dict]:
        pixels = torch.frombuffer(bytearray(base64.b64decode(request["row"])), dtype=torch.uint8)
        return pixels.view(SIDE, SIDE), {"inverted": bool(request["inverted"]), "pixels": request["row"]}

    def batch(self, inputs: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
        return torch.stack([pixels for pixels, _ in inputs]), [record for _, record in inputs]

    def predict(self, batch: tuple[torch.Tensor, list[dict]]) -> list[dict]:
        pixels, extras = batch  # (B, 28, 28) uint8
        probs = predict_probabilities(self.model, pixels.unsqueeze(1).float().div(255), tta_hflip=self.tta_hflip)
        records = describe([{} for _ in extras], probs, None, self.top_k)
        for record, extra in zip(records, extras):
            del record["label"]  # unknown for a served image
            record.update(extra)
        return records

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output
