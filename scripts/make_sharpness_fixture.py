#!/usr/bin/env python3
"""PyTorch's double-backward Hessian quadratic forms z^T H z of a tiny Llama checkpoint,
the external reference of `ckpt sharpness` (tests/sharpness.rs).

    /work/pyref/bin/python scripts/make_sharpness_fixture.py

Loads tests/fixtures/parity/llama_gqa with transformers (eager attention: PyTorch's
sdpa kernel cannot be differentiated twice on CPU) in float64, draws fixed token
batches and Rademacher probes (seeded), and for each probe computes z^T H z of the mean
next-token loss over the batches by double backward (torch.autograd.grad with
create_graph=True). Writes tests/fixtures/sharpness/:

- reference.json: checkpoint, token batches, loss, per-probe z^T H z (f64), the same
  from the unpatched float32 model (for information), versions.
- probes.safetensors: the probes as uint8 (1 -> +1, 0 -> -1), keyed "{probe}/{name}"
  by Hugging Face parameter name, so the Rust test uses exactly these vectors.

transformers computes a few things in float32 even in a float64 model (RMSNorm, the
eager softmax, the loss's logits, the rotary angles). For a float64 reference those are
patched to stay in float64; the rotary tables are built as ckpt builds them (angles in
float32 as transformers does, cosine and sine of that angle rounded to float32), so the
two compute the same function and any difference is the Hessian machinery's. The
embedding's padding row (pad_token_id) is turned off: nn.Embedding zeroes that row's
gradient although the batches use it, so PyTorch's Hessian would not be the loss's.
"""

import json
import math
import pathlib
import sys

import safetensors.torch
import torch
import transformers
from transformers.models.llama import modeling_llama

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKPOINT = "tests/fixtures/parity/llama_gqa"
OUT = ROOT / "tests/fixtures/sharpness"
SEED = 1234
BATCHES, ROWS, SEQ_LEN = 2, 2, 16
PROBES = 3


def rms_norm_in_input_dtype(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def eager_attention_in_input_dtype(module, query, key, value, attention_mask, scaling,
                                   dropout=0.0, **kwargs):
    key_states = modeling_llama.repeat_kv(key, module.num_key_value_groups)
    value_states = modeling_llama.repeat_kv(value, module.num_key_value_groups)
    weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.nn.functional.softmax(weights, dim=-1)
    out = torch.matmul(weights, value_states).transpose(1, 2).contiguous()
    return out, weights


def ckpt_rotary_tables(config):
    """cos/sin as ckpt computes them: inverse frequencies in f64 rounded to f32, the
    angle position * inv_freq in f32, its cosine and sine in f64 rounded to f32."""
    dim = config.head_dim
    theta = config.rope_parameters["rope_theta"]
    inv = torch.tensor([1.0 / theta ** (2 * i / dim) for i in range(dim // 2)],
                       dtype=torch.float64).float()

    def forward(self, x, position_ids):
        freqs = position_ids[..., None].float() * inv.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1).double()
        cos = emb.cos().float().to(x.dtype)
        sin = emb.sin().float().to(x.dtype)
        return cos, sin

    return forward


def load(dtype, patched):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        ROOT / CHECKPOINT, dtype=dtype, attn_implementation="eager")
    model.eval()
    # The config's pad_token_id makes nn.Embedding zero the gradient of that row, which
    # the batches use: not the gradient of the loss. ckpt has no padding row.
    model.model.embed_tokens.padding_idx = None
    if patched:
        modeling_llama.LlamaRMSNorm.forward = rms_norm_in_input_dtype
        modeling_llama.eager_attention_forward = eager_attention_in_input_dtype
        modeling_llama.LlamaRotaryEmbedding.forward = ckpt_rotary_tables(model.config)
    return model


def mean_loss(model, batches):
    """Mean over batches of the mean next-token cross-entropy, in the model's dtype
    (transformers' own loss casts the logits to float32)."""
    total = 0.0
    for ids in batches:
        logits = model(input_ids=ids).logits
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        total = total + -logp.gather(-1, ids[:, 1:, None]).mean()
    return total / len(batches)


def quadratic_forms(model, batches, probes):
    params = [p for _, p in model.named_parameters()]
    loss = mean_loss(model, batches)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    out = []
    for z in probes:
        zs = [z[n].to(p.dtype) for n, p in model.named_parameters()]
        inner = sum((g * v).sum() for g, v in zip(grads, zs))
        hz = torch.autograd.grad(inner, params, retain_graph=True)
        out.append(sum((h * v).sum() for h, v in zip(hz, zs)).item())
    return loss.item(), out


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = load(torch.float64, patched=False)
    vocab = model.config.vocab_size
    batches = [torch.randint(0, vocab, (ROWS, SEQ_LEN), generator=gen) for _ in range(BATCHES)]
    names = [n for n, _ in model.named_parameters()]
    bits = [{n: torch.randint(0, 2, p.shape, generator=gen, dtype=torch.uint8)
             for n, p in model.named_parameters()} for _ in range(PROBES)]
    probes = [{n: b[n].double() * 2 - 1 for n in names} for b in bits]

    f32_loss, f32_forms = quadratic_forms(load(torch.float32, patched=False), batches, probes)
    f64_loss, f64_forms = quadratic_forms(load(torch.float64, patched=True), batches, probes)

    OUT.mkdir(parents=True, exist_ok=True)
    tensors = {f"{i}/{n}": b[n].contiguous() for i, b in enumerate(bits) for n in names}
    safetensors.torch.save_file(tensors, OUT / "probes.safetensors")
    reference = {
        "checkpoint": CHECKPOINT,
        "seed": SEED,
        "batches": [b.tolist() for b in batches],
        "parameters": names,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "loss_f64": f64_loss,
        "zhz_f64": f64_forms,
        "loss_f32_unpatched": f32_loss,
        "zhz_f32_unpatched": f32_forms,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    for i, (a, b) in enumerate(zip(f64_forms, f32_forms)):
        print(f"probe {i}: z^T H z = {a:.12g} (f64), {b:.8g} (f32, rel diff "
              f"{abs(a - b) / abs(a):.1e})")
    print(f"loss {f64_loss:.12g}; wrote {OUT}")
    assert all(math.isfinite(x) for x in f64_forms)


if __name__ == "__main__":
    main()
