"""Reference training steps for `tests/train_parity.rs`, computed with PyTorch.

A tiny Llama (transformers' LlamaForCausalLM, f32, eager attention) takes three AdamW
steps the way the paper's recipes train: torch.optim.AdamW (betas 0.9/0.95, eps 1e-8,
weight decay 0.1 on matrices, none on norms), clip_grad_norm_(1.0), two accumulation
micro-batches whose token-mean losses are weighted by their share of the step's tokens.
The third step uses an SFT-style loss mask. Writes, under tests/fixtures/train/:

  init/        config.json + model.safetensors: the starting weights
  after/       model.safetensors: the weights after the three steps
  steps.json   the batches, masks, learning rates, and per-step loss and grad norm

Run from the repository root with the reference venv (scripts/requirements-reference.txt):
    python scripts/make_train_fixture.py
"""

import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join("tests", "fixtures", "train")
SEQ = 9  # tokens per row (seq_len 8 + 1)
ROWS = 2  # rows per micro-batch
ACCUM = 2
LRS = [1e-3, 5e-3, 2e-2]


def model():
    torch.manual_seed(1234)
    cfg = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    cfg._attn_implementation = "eager"
    m = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        # Norm scales away from 1 so a missing norm gradient would show.
        for name, p in m.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return cfg, m


def batches(gen, step):
    out = []
    for _ in range(ACCUM):
        tokens = torch.randint(0, 48, (ROWS, SEQ), generator=gen)
        mask = torch.ones(ROWS, SEQ)
        if step == 2:  # SFT-like: only some targets count
            mask = (torch.rand(ROWS, SEQ, generator=gen) > 0.4).float()
        mask[:, 0] = 0.0
        out.append((tokens, mask))
    return out


def main():
    cfg, m = model()
    os.makedirs(os.path.join(OUT, "init"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "after"), exist_ok=True)
    m.save_pretrained(os.path.join(OUT, "init"), safe_serialization=True)

    decay = [p for n, p in m.named_parameters() if "norm" not in n and "bias" not in n]
    no_decay = [p for n, p in m.named_parameters() if "norm" in n or "bias" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LRS[0], betas=(0.9, 0.95), eps=1e-8, foreach=False,
    )
    gen = torch.Generator().manual_seed(99)
    steps = []
    for step, lr in enumerate(LRS):
        micro = batches(gen, step)
        total = sum(float(mask[:, 1:].sum()) for _, mask in micro)
        opt.zero_grad()
        loss_value = 0.0
        for tokens, mask in micro:
            logits = m(input_ids=tokens[:, :-1]).logits
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
            )
            loss = (nll * mask[:, 1:].reshape(-1)).sum() / total
            loss.backward()
            loss_value += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0).item()
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        steps.append({
            "lr": lr,
            "loss": loss_value,
            "grad_norm": norm,
            "micro_batches": [
                {"tokens": t.tolist(), "loss_mask": mk.tolist()} for t, mk in micro
            ],
        })
    save_file({n: p.detach().contiguous() for n, p in m.named_parameters()},
              os.path.join(OUT, "after", "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "steps.json"), "w") as f:
        json.dump({"torch": torch.__version__, "steps": steps}, f, indent=1)
    print("wrote", OUT, [round(s["loss"], 4) for s in steps])


if __name__ == "__main__":
    main()
