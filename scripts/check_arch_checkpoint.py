#!/usr/bin/env python3
"""Load checkpoint directories with transformers and report what they compute.

For each DIR (e.g. one written by ckpt, float32), loads
``AutoModelForCausalLM.from_pretrained(DIR, attn_implementation="eager")`` and, if
``DIR/loss_check.json`` exists (``{"token_ids": [[...], ...]}``), the mean next-token
cross-entropy over all rows (token-weighted; rows may differ in length), as the
``loss_check`` entries of tests/fixtures/arch/reference.json were made.

Prints a JSON list on stdout, one object per DIR:
``{"dir", "architecture", "model_type", "loss", "num_predicted", "missing_keys", "unexpected_keys"}``
(``loss`` and ``num_predicted`` are null without loss_check.json).

Usage (reference venv): python scripts/check_arch_checkpoint.py DIR [DIR...]
"""

import json
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


@torch.no_grad()
def check(path: str) -> dict:
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    out = {"dir": path, "architecture": type(model).__name__, "model_type": model.config.model_type,
           "loss": None, "num_predicted": None,
           "missing_keys": sorted(info["missing_keys"]), "unexpected_keys": sorted(info["unexpected_keys"])}
    lc = os.path.join(path, "loss_check.json")
    if os.path.exists(lc):
        with open(lc) as f:
            rows = json.load(f)["token_ids"]
        total, n = 0.0, 0
        for row in rows:
            ids = torch.tensor([row])
            logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0, :-1]
            total += -logp.gather(-1, ids[0, 1:, None]).sum().item()
            n += len(row) - 1
        out["loss"], out["num_predicted"] = total / n, n
    return out


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    print(json.dumps([check(d) for d in sys.argv[1:]], indent=1))


if __name__ == "__main__":
    main()
