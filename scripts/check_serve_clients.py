#!/usr/bin/env python
"""`ckpt serve` checked with the clients people point at it: lm-evaluation-harness
0.4.13's `local-completions` model and the OpenAI Python SDK.

1. `ckpt serve CKPT --port 0 --model-name tiny` is started on a tiny checkpoint
   (default tests/fixtures/trained/tiny-wso) behind a recording proxy written here: it
   forwards every request unchanged (an event stream piece by piece, as it comes) and
   records each request body with its response body or Server-Sent Events.
2. lm-eval (`lm_eval.simple_evaluate` with `--model local-completions` and model_args
   base_url=<proxy>/v1/completions,model=tiny,tokenizer=CKPT,tokenized_requests=True,
   num_concurrent=1,max_length=64) scores synthetic multiple-choice tasks (`ckpt synth
   --eval-tasks`; lm-eval's own task YAML, its data pointed at the local JSONL files
   with `dataset_path: json`, as scripts/eval_parity.py does) with log_samples.
3. `ckpt eval CKPT --add-bos-token false` scores the same docs in-process; every
   per-request log-likelihood must agree within 1e-4, every per-doc metric and
   aggregate must be equal. lm-eval's API model sends at most max_length - 1 tokens
   (the last 63 here) and scores them with the first as context only, where its HF
   backend and `ckpt eval` keep the last max_length + 1: `ckpt eval --max-length 62`
   is the same window. Every answer must hold the prompt's tokens and exactly one
   generated token: lm-eval sums `token_logprobs[ctxlen:-1]`.
4. The OpenAI SDK: /v1/models, a chat completion (temperature 0, logprobs), the same
   chat streamed with stream_options.include_usage (the deltas concatenated must be
   the text, the last chunk carries the usage), a completion with echo + logprobs, a
   streamed completion, a seeded sampled completion twice (the same text).
5. Stop-token probe: lm-eval scores a continuation after which the model's greedy
   token is its EOS (tests/fixtures/parity/llama_gqa, a random Llama, on token ids where
   transformers' argmax is EOS), against transformers' log-likelihood of it.
6. Writes tests/fixtures/serve_clients/summary.json (versions, max difference, metrics
   side by side, checks) and exchanges.jsonl (a few of the recorded exchanges, which
   tests/serve_clients.rs replays against `ckpt serve` without Python). The fixture is
   written even when a check fails (it then shows the failure); the exit status is 1.

Run: ~/.venvs/ckpt-ref/bin/python scripts/check_serve_clients.py [--ckpt target/debug/ckpt]
     [--model tests/fixtures/trained/tiny-wso] [--tasks arc_easy piqa] [--limit 10] [--no-fixture]
Needs lm-eval[api]==0.4.13 and openai in the venv. No network beyond loopback.
"""

import argparse
import http.client
import http.server
import json
import logging
import os
import platform
import random
import time
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# lm-eval's local-completions sends OPENAI_API_KEY when set; this server needs none.
os.environ.pop("OPENAI_API_KEY", None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

# lm-eval's task configs pointed at the synthetic files, as the prompt parity does.
from eval_parity import SYNTH, ckpt_spec, lm_eval_config, run_ckpt  # noqa: E402

import datasets  # noqa: E402
import lm_eval  # noqa: E402
import openai  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

FIXTURES = ROOT / "tests/fixtures/serve_clients"
MODEL_NAME = "tiny"
MAX_LENGTH = 64  # the checkpoints' max_position_embeddings
LL_TOLERANCE = 1e-4
# A random Llama whose greedy token is often its EOS (the trained one never picks it).
PROBE_MODEL = ROOT / "tests/fixtures/parity/llama_gqa"
PROBE_NAME = "tiny-random"
PROBE_SEED = 0
# Prompts of the SDK checks (the tiny model was trained on the synthetic world).
CHAT = [{"role": "user", "content": "Tell me about the Miling."}]
ECHO_PROMPT = "The Miling is blue. The Miling eats"
SEEDED_PROMPT = "Lostead is a town."


def rel(p):
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


# -- the recording proxy ---------------------------------------------------------------

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
       "content-length", "host"}


class Recorder:
    """The exchanges seen by every proxy, in order, each tagged with the checkpoint
    served and the client that asked (set by the script before each client runs)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.client = "?"

    def add(self, record):
        with self.lock:
            self.records.append(record)


def proxy_handler(upstream, recorder, tags):
    u = urllib.parse.urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return body
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def forward(self):
            client = recorder.client  # the one asking now (the script runs one client at a time)
            body = self.read_body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            streamed = resp.getheader("Content-Type", "").startswith("text/event-stream")
            if streamed:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                pieces = []
                while piece := resp.read1(65536):
                    pieces.append(piece)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                data = b"".join(pieces)
            else:
                data = resp.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            self.wfile.flush()
            conn.close()
            record = {"client": client, **tags, "method": self.command, "path": self.path, "request": parse(body),
                      "status": resp.status}
            if streamed:
                record["stream"] = data.decode("utf-8")
            else:
                record["response"] = parse(data)
            recorder.add(record)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = forward

    return Handler


def parse(body):
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


class Served:
    """`ckpt serve MODEL --port 0 --model-name NAME` behind a recording proxy."""

    def __init__(self, ckpt, model, name, recorder, cwd):
        self.proc = subprocess.Popen(
            [ckpt, "serve", str(model), "--port", "0", "--model-name", name],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline()  # "serving NAME at http://127.0.0.1:PORT/v1"
        if not line.strip():
            self.proc.kill()
            raise SystemExit(f"ckpt serve {model} printed no URL (exit {self.proc.wait()})")
        self.upstream = line.split()[-1].removesuffix("/v1")
        tags = {"checkpoint": rel(model), "model_name": name}
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                    proxy_handler(self.upstream, recorder, tags))
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"  # the proxy's

    def models(self):
        return json.loads(urllib.request.urlopen(f"{self.upstream}/v1/models").read())

    def close(self):
        self.http.shutdown()
        self.http.server_close()
        self.proc.kill()
        self.proc.wait()


# -- lm-eval against the proxy, ckpt eval in-process ------------------------------------

def local_completions(url, name, model):
    model_args = (f"base_url={url}/v1/completions,model={name},tokenizer={model},"
                  f"tokenized_requests=True,num_concurrent=1,max_length={MAX_LENGTH}")
    return get_model("local-completions").create_from_arg_string(model_args), model_args


def lm_eval_run(served, model, tasks, limit, data_dir, tm):
    """lm-eval's local-completions on `tasks`: what it made of each request (keyed by
    the token ids it sends), its per-doc results and its aggregates."""
    lm, model_args = local_completions(served.url, MODEL_NAME, model)
    configs = [lm_eval_config(tm, t, ckpt_spec(CKPT, t), data_dir) for t in tasks]
    out = lm_eval.simple_evaluate(model=lm, tasks=configs, num_fewshot=0, limit=limit, log_samples=True,
                                  bootstrap_iters=100000)
    by_ids, docs, results = {}, {}, {}
    for task in tasks:
        results[task] = {k: v for k, v in out["results"][task].items() if "," in k}
        for sample in out["samples"][task]:
            lls = [r[0][0] for r in sample["resps"]]
            metrics = {f"{m},{sample['filter']}": float(sample[m]) for m in sample["metrics"]}
            docs[(task, sample["doc_id"])] = {"lls": lls, "metrics": metrics}
            for choice, (context, continuation) in enumerate(sample["arguments"]):
                # What lm-eval sends for this request, and where the continuation starts.
                ctx_enc, cont_enc = lm._encode_pair(context, continuation)
                (inp,), (ctxlen,), _ = lm.batch_loglikelihood_requests([[(None, ctx_enc, cont_enc)]])
                by_ids[tuple(inp)] = {"task": task, "doc_id": sample["doc_id"], "choice": choice,
                                      "ctxlen": ctxlen, "loglikelihood": lls[choice],
                                      "is_greedy": sample["resps"][choice][0][1]}
    shown = model_args.replace(served.url, "<proxy>").replace(str(model), rel(model))
    return shown, by_ids, docs, results


def ckpt_eval_run(model, tasks, limit, data_dir, tmp):
    """`ckpt eval`'s per-doc log-likelihoods and metrics (its --output samples) and
    aggregates (its --json report)."""
    out_dir = Path(tmp) / "ckpt-eval"
    args = ["eval", str(model), "--tasks", ",".join(tasks), "--limit", str(limit), "--data-dir", str(data_dir),
            "--fewshot-dir", str(Path(data_dir) / "fewshot"), "--num-fewshot", "0", "--add-bos-token", "false",
            "--max-length", str(MAX_LENGTH - 2), "--store", str(Path(tmp) / "ckpt.sqlite"),
            "--output", str(out_dir), "--dtype", "f32", "--json", "-q"]
    report = json.loads(run_ckpt(CKPT, args))
    (checkpoint,) = report["checkpoints"]
    if checkpoint.get("error"):
        raise SystemExit(f"ckpt eval: {checkpoint['error']}")
    results = {t: {} for t in tasks}
    for m in checkpoint["metrics"]:
        results[m["task"]][f"{m['metric']},{m['filter']}"] = m["value"]
        results[m["task"]][f"{m['metric']}_stderr,{m['filter']}"] = m["stderr"] if m["stderr"] is not None else "N/A"
    docs = {}
    for task in tasks:
        (samples,) = out_dir.glob(f"samples_{task}_*.jsonl")
        for line in samples.read_text().splitlines():
            row = json.loads(line)
            docs[(task, row["doc_id"])] = {"lls": row["responses"], "metrics": row["metrics"]}
    return docs, results


def compare_eval(theirs, ours, their_results, our_results):
    problems, worst, n = [], 0.0, 0
    if sorted(theirs) != sorted(ours):
        problems.append(f"docs: lm-eval {sorted(theirs)} vs ckpt {sorted(ours)}")
    for key in sorted(set(theirs) & set(ours)):
        a, b = ours[key], theirs[key]
        if len(a["lls"]) != len(b["lls"]):
            problems.append(f"{key}: {len(a['lls'])} choices vs {len(b['lls'])}")
            continue
        diffs = [abs(x - y) for x, y in zip(a["lls"], b["lls"])]
        n += len(diffs)
        worst = max([worst, *diffs])
        if max(diffs) >= LL_TOLERANCE:
            problems.append(f"{key}: log-likelihoods ckpt {a['lls']} vs lm-eval {b['lls']}")
        if a["metrics"] != b["metrics"]:
            problems.append(f"{key}: metrics ckpt {a['metrics']} vs lm-eval {b['metrics']}")
    metrics = {}
    for task, theirs_t in their_results.items():
        metrics[task] = {}
        for k, v in theirs_t.items():
            mine = our_results[task].get(k)
            metrics[task][k] = {"lm_eval": v, "ckpt": mine}
            if mine != v:
                problems.append(f"{task} {k}: ckpt {mine!r} vs lm-eval {v!r}")
    return problems, worst, n, metrics


def one_generated_token(records):
    """lm-eval's requests whose answer does not hold the prompt plus one token."""
    bad = []
    for r in records:
        if r["path"] == "/v1/completions" and r["status"] == 200:
            (prompt,) = r["request"]["prompt"]
            tokens = r["response"]["choices"][0]["logprobs"]["tokens"]
            if len(tokens) != len(prompt) + 1:
                bad.append(f"{len(prompt)}-token prompt answered with {len(tokens)} tokens "
                           f"({r['response']['choices'][0]['finish_reason']})")
    return bad


# -- the OpenAI SDK ---------------------------------------------------------------------

def sdk_checks(served, recorder, check):
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="not-needed", max_retries=0)

    recorder.client = "openai:models"
    models = client.models.list()
    check("SDK: models lists the served model", [m.id for m in models.data] == [MODEL_NAME], models)

    recorder.client = "openai:chat"
    chat = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=24, temperature=0,
                                          logprobs=True, top_logprobs=2)
    text = chat.choices[0].message.content
    check("SDK: chat answers, a log-probability per token", chat.object == "chat.completion"
          and isinstance(text, str) and chat.choices[0].message.role == "assistant"
          and chat.usage.completion_tokens == len(chat.choices[0].logprobs.content)
          and chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, chat)

    recorder.client = "openai:chat-stream"
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=24, temperature=0,
                                                 logprobs=True, top_logprobs=2, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    streamed_tokens = [t.token for c in chunks if c.choices and c.choices[0].logprobs
                       for t in c.choices[0].logprobs.content]
    check("SDK: streamed chat deltas concatenate to the text", deltas == text, f"{deltas!r} vs {text!r}")
    check("SDK: streamed chat log-probabilities are the text's",
          streamed_tokens == [t.token for t in chat.choices[0].logprobs.content])
    check("SDK: streamed chat chunks", all(c.object == "chat.completion.chunk" for c in chunks)
          and chunks[0].choices[0].delta.role == "assistant"
          and chunks[-2].choices[0].finish_reason == chat.choices[0].finish_reason, chunks[:2])
    last = chunks[-1]
    check("SDK: the last chunk carries the usage", last.choices == [] and last.usage is not None
          and last.usage.model_dump() == chat.usage.model_dump()
          and all(c.usage is None for c in chunks[:-1]), last)

    recorder.client = "openai:echo"
    echo = client.completions.create(model=MODEL_NAME, prompt=ECHO_PROMPT, max_tokens=4, temperature=0, echo=True,
                                     logprobs=2)
    lp = echo.choices[0].logprobs
    n_tokens = echo.usage.prompt_tokens + echo.usage.completion_tokens
    offsets = [0]
    for t in lp.tokens[:-1]:
        offsets.append(offsets[-1] + len(t))
    check("SDK: echo gives the prompt's log-probabilities, the first null",
          echo.choices[0].text.startswith(ECHO_PROMPT) and lp.token_logprobs[0] is None
          and lp.top_logprobs[0] is None
          and all(isinstance(x, float) for x in lp.token_logprobs[1:])
          and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n_tokens
          and "".join(lp.tokens) == echo.choices[0].text and lp.text_offset == offsets, echo)
    check("SDK: echo's top log-probabilities hold the best",
          all(len(top) == 2 and max(top.values()) >= tok - 1e-6 for top, tok in
              zip(lp.top_logprobs[1:], lp.token_logprobs[1:])), lp)

    recorder.client = "openai:completion"
    plain = client.completions.create(model=MODEL_NAME, prompt=ECHO_PROMPT, max_tokens=4, temperature=0)
    recorder.client = "openai:completion-stream"
    pieces = list(client.completions.create(model=MODEL_NAME, prompt=ECHO_PROMPT, max_tokens=4, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    check("SDK: a streamed completion concatenates to the text",
          "".join(c.choices[0].text for c in pieces if c.choices) == plain.choices[0].text
          and pieces[-1].usage.model_dump() == plain.usage.model_dump(), pieces)

    recorder.client = "openai:seeded"
    seeded = [client.completions.create(model=MODEL_NAME, prompt=SEEDED_PROMPT, max_tokens=16, temperature=1.0,
                                        top_p=0.95, seed=7).choices[0].text for _ in range(2)]
    check("SDK: a seed reproduces a sampled completion", seeded[0] == seeded[1], seeded)


# -- the stop-token probe ---------------------------------------------------------------

def stop_token_probe(served, recorder):
    """lm-eval's log-likelihood of a continuation after which transformers' greedy token
    is EOS, through `ckpt serve`, against transformers' own."""
    cfg = json.loads((PROBE_MODEL / "config.json").read_text())
    eos = cfg["eos_token_id"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(PROBE_MODEL), dtype=torch.float32)
    rng = random.Random(PROBE_SEED)
    found = None
    while found is None:
        ids = [rng.randrange(2, cfg["vocab_size"]) for _ in range(40)]
        with torch.no_grad():
            greedy = hf(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        found = next((ids[: j + 1] for j in range(4, len(ids)) if greedy[j] == eos), None)
    with torch.no_grad():
        lps = torch.log_softmax(hf(torch.tensor([found])).logits[0].double(), -1)
    ctx, cont = found[:-2], found[-2:]
    reference = float(sum(lps[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))
    recorder.client = "lm-eval:stop-token-probe"
    lm, _ = local_completions(served.url, PROBE_NAME, PROBE_MODEL)
    ((ll, is_greedy),) = lm._loglikelihood_tokens([(None, ctx, cont)])
    # The proxy records an exchange once it has relayed it: wait for the completion's.
    for _ in range(100):
        answers = [r for r in recorder.records
                   if r["client"] == "lm-eval:stop-token-probe" and r["path"].endswith("/completions")]
        if answers:
            break
        time.sleep(0.05)
    answer = answers[-1]
    tokens = answer["response"]["choices"][0]["logprobs"]["tokens"]
    answer["lm_eval"] = {"ctxlen": len(ctx), "loglikelihood": ll, "is_greedy": is_greedy,
                         "transformers": reference}
    return {
        "checkpoint": rel(PROBE_MODEL),
        "prompt_tokens": len(found),
        "ctxlen": len(ctx),
        "eos_token_id": eos,
        "transformers_greedy_next": int(lps[-1].argmax()),
        "answer_tokens": len(tokens),
        "finish_reason": answer["response"]["choices"][0]["finish_reason"],
        "lm_eval_loglikelihood": ll,
        "transformers_loglikelihood": reference,
        "abs_diff": abs(ll - reference),
        "passed": abs(ll - reference) < LL_TOLERANCE and len(tokens) == len(found) + 1,
    }


# -- the fixture ------------------------------------------------------------------------

def prompt_ids(request):
    """The one token-id prompt of a local-completions request (batch size 1)."""
    prompt = request["prompt"]
    return tuple(prompt[0] if prompt and isinstance(prompt[0], list) else prompt)


def select_exchanges(records, by_ids, ckpt_lls):
    """Per lm-eval task its longest request (context truncated on the left) and its
    shortest, annotated with what lm-eval and ckpt eval made of them; every SDK
    exchange; the stop-token probe."""
    kept, per_task = [], {}
    for r in records:
        if r["client"] == "lm-eval" and r["path"] == "/v1/completions":
            what = by_ids.get(prompt_ids(r["request"]))
            if what is not None:
                per_task.setdefault(what["task"], []).append((r, what))
    for task, rs in per_task.items():
        rs.sort(key=lambda x: len(prompt_ids(x[0]["request"])))
        for r, what in [rs[-1], rs[0]]:
            lm = {k: what[k] for k in ("task", "doc_id", "choice", "ctxlen", "loglikelihood", "is_greedy")}
            lm["ckpt_eval"] = ckpt_lls[(task, what["doc_id"])][what["choice"]]
            kept.append({**r, "lm_eval": lm})
    kept += [r for r in records if r["client"].startswith("openai:") or "lm_eval" in r]
    return kept


def main():
    global CKPT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(ROOT / "target/debug/ckpt"))
    ap.add_argument("--model", default=str(ROOT / "tests/fixtures/trained/tiny-wso"))
    ap.add_argument("--tasks", nargs="+", default=["arc_easy", "piqa"])
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--no-fixture", action="store_true", help="do not rewrite tests/fixtures/serve_clients")
    args = ap.parse_args()
    CKPT = args.ckpt
    model = Path(args.model).resolve()
    datasets.disable_progress_bars()
    for name in ("lm-eval", "lm_eval", "httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    versions = {"lm_eval": lm_eval.__version__, "openai": openai.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "datasets": datasets.__version__, "python": platform.python_version()}
    print(", ".join(f"{k} {v}" for k, v in versions.items()))
    checks = {}

    def check(name, ok, detail=""):
        checks[name] = bool(ok)
        print(f"{'ok' if ok else 'FAILED':6}  {name}" + ("" if ok else f": {str(detail)[:400]}"))

    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        eval_docs = max(SYNTH["eval_docs"], args.limit)
        run_ckpt(CKPT, ["synth", "--eval-tasks", str(data_dir), "--seed", str(SYNTH["seed"]),
                        "--entities", str(SYNTH["entities"]), "--eval-docs", str(eval_docs), "-q"])
        served = Served(CKPT, model, MODEL_NAME, recorder, tmp)
        try:
            fingerprint = served.models()["data"][0]["fingerprint"]
            recorder.client = "lm-eval"
            model_args, by_ids, theirs, their_results = lm_eval_run(
                served, model, args.tasks, args.limit, data_dir, TaskManager())
            ours, our_results = ckpt_eval_run(model, args.tasks, args.limit, data_dir, tmp)
            eval_problems, worst, n, metrics = compare_eval(theirs, ours, their_results, our_results)
            lm_records = [r for r in recorder.records if r["client"] == "lm-eval"]
            scored = [r for r in lm_records if r["path"] == "/v1/completions"]
            print(f"lm-eval local-completions vs ckpt eval: {n} requests, max |dll| {worst:.2e}")
            for task, ms in metrics.items():
                print(f"  {task}: " + ", ".join(f"{k} {v['lm_eval']} / {v['ckpt']}" for k, v in ms.items()
                                                if "stderr" not in k))
            check("lm-eval: log-likelihoods within 1e-4 of ckpt eval's", n > 0 and worst < LL_TOLERANCE)
            check("lm-eval: metrics equal ckpt eval's", not eval_problems, eval_problems)
            bad = one_generated_token(scored)
            check("lm-eval: every answer is the prompt and one generated token", not bad, bad)
            check("lm-eval: every request answered 200", all(r["status"] == 200 for r in scored))
            sdk_checks(served, recorder, check)
        finally:
            served.close()
        probe_served = Served(CKPT, PROBE_MODEL, PROBE_NAME, recorder, tmp)
        try:
            probe = stop_token_probe(probe_served, recorder)
        finally:
            probe_served.close()
        check("lm-eval: a continuation the model ends with EOS is scored whole (stop-token probe)",
              probe["passed"], probe)
        other = sorted({f"{r['method']} {r['path']} {r['status']}" for r in lm_records
                        if r["path"] != "/v1/completions"})
        summary = {
            "about": "ckpt serve answering lm-evaluation-harness's local-completions and the OpenAI Python SDK "
                     "(scripts/check_serve_clients.py); tests/serve_clients.rs replays exchanges.jsonl",
            "command": "~/.venvs/ckpt-ref/bin/python scripts/check_serve_clients.py "
                       f"--tasks {' '.join(args.tasks)} --limit {args.limit}",
            "versions": versions,
            "checkpoint": rel(model),
            "fingerprint": fingerprint,
            "served_as": MODEL_NAME,
            "synth": {**SYNTH, "eval_docs": eval_docs},
            "lm_eval": {
                "model": "local-completions",
                "model_args": model_args,
                "tasks": args.tasks,
                "num_fewshot": 0,
                "limit": args.limit,
                "requests": n,
                "completions_requests": len(scored),
                "other_requests": other,
                "max_abs_diff": worst,
                "tolerance": LL_TOLERANCE,
            },
            "ckpt_eval": f"ckpt eval CKPT --tasks {','.join(args.tasks)} --num-fewshot 0 --limit {args.limit} "
                         f"--add-bos-token false --max-length {MAX_LENGTH - 2} --dtype f32 --output DIR --json",
            "metrics": metrics,
            "metrics_equal": not eval_problems,
            "stop_token_probe": probe,
            "checks": checks,
            "passed": all(checks.values()),
        }
        exchanges = select_exchanges(recorder.records, by_ids, {k: v["lls"] for k, v in ours.items()})
    if not args.no_fixture:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        (FIXTURES / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (FIXTURES / "exchanges.jsonl").write_text("".join(json.dumps(e) + "\n" for e in exchanges))
        for f in ("summary.json", "exchanges.jsonl"):
            print(f"wrote {rel(FIXTURES / f)} ({(FIXTURES / f).stat().st_size} bytes, "
                  f"{len(exchanges) if f.endswith('jsonl') else 1} records)")
    failed = [k for k, v in checks.items() if not v]
    if failed:
        sys.exit(f"{len(failed)} check(s) failed: {failed}")
    print("all checks passed")


CKPT = None

if __name__ == "__main__":
    main()
