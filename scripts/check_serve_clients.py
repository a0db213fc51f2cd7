#!/usr/bin/env python
"""`ckpt serve` checked with the clients people point at it: lm-evaluation-harness
0.4.13's `local-completions` model and the OpenAI Python SDK.

1. `ckpt serve CKPT --port 0 --model-name tiny` is started on a tiny checkpoint
   (default tests/fixtures/trained/tiny-wso) behind a recording proxy written here: it
   forwards every request unchanged (streams as they come) and records each request
   body with its response body or Server-Sent Events.
2. lm-eval (`lm_eval.simple_evaluate`, `--model local-completions`, `model_args`
   base_url=<proxy>/v1/completions,model=tiny,tokenizer=CKPT,tokenized_requests=True,
   num_concurrent=1,max_length=64) scores synthetic multiple-choice tasks (`ckpt synth
   --eval-tasks`, lm-eval's own task YAML with `dataset_path: json`) with log_samples.
3. `ckpt eval CKPT --add-bos-token false` scores the same docs in-process; every
   per-request log-likelihood must agree within 1e-4, every per-doc metric and
   aggregate must be equal. lm-eval's API model sends at most max_length - 1 tokens
   (the last 63 here) and scores them with the first as context only, where its HF
   backend and `ckpt eval` keep the last max_length + 1; `ckpt eval --max-length 62`
   is the same window.
4. The OpenAI SDK: /v1/models, a chat completion (temperature 0, logprobs), the same
   chat streamed with stream_options.include_usage (the deltas concatenated must be
   the text, the last chunk carries the usage), a completion with echo + logprobs, a
   streamed completion, a seeded sampled completion twice (the same text).
5. Writes tests/fixtures/serve_clients/summary.json (versions, max difference, metrics
   side by side, checks) and exchanges.jsonl (a few of the recorded exchanges, which
   tests/serve_clients.rs replays against `ckpt serve` without Python).

Run: ~/.venvs/ckpt-ref/bin/python scripts/check_serve_clients.py [--ckpt target/debug/ckpt]
     [--model tests/fixtures/trained/tiny-wso] [--limit 10] [--tasks arc_easy piqa] [--no-fixture]
No network beyond loopback: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE are set.
"""

import argparse
import http.client
import http.server
import json
import os
import platform
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
MAX_LENGTH = 64  # the checkpoint's max_position_embeddings
LL_TOLERANCE = 1e-4
# Exchanges kept per lm-eval task in the fixture: its longest request (context
# truncated on the left) and its shortest.
LM_EVAL_KEPT = 2
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
    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.host, self.port = u.hostname, u.port
        self.lock = threading.Lock()
        self.records = []
        self.client = "?"  # who is asking (set by the script before each client runs)

    def add(self, record):
        with self.lock:
            record = {"seq": len(self.records), "client": self.client, **record}
            self.records.append(record)


def proxy_handler(recorder):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def forward(self):
            body = self.read_body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            conn = http.client.HTTPConnection(recorder.host, recorder.port, timeout=600)
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
            request = None
            if body:
                try:
                    request = json.loads(body)
                except ValueError:
                    request = body.decode("utf-8", "replace")
            record = {"method": self.command, "path": self.path, "request": request, "status": resp.status}
            if streamed:
                record["stream"] = data.decode("utf-8")
            else:
                try:
                    record["response"] = json.loads(data) if data else None
                except ValueError:
                    record["response"] = data.decode("utf-8", "replace")
            recorder.add(record)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = forward

    return Handler


class Proxy:
    def __init__(self, upstream):
        self.recorder = Recorder(upstream)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), proxy_handler(self.recorder))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start_serve(ckpt, model, cwd):
    proc = subprocess.Popen(
        [ckpt, "serve", str(model), "--port", "0", "--model-name", MODEL_NAME],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise SystemExit(f"ckpt serve printed no URL (exit {proc.wait()})")
    url = line.split()[-1]  # "serving NAME at http://127.0.0.1:PORT/v1"
    return proc, url.removesuffix("/v1")


# -- lm-eval against the proxy, ckpt eval in-process ------------------------------------

def lm_eval_run(proxy_url, model, tasks, limit, data_dir, tm):
    """lm-eval's local-completions on `tasks`: its per-request results keyed by the
    token ids it sends, per-doc results and aggregates."""
    model_args = (f"base_url={proxy_url}/v1/completions,model={MODEL_NAME},tokenizer={model},"
                  f"tokenized_requests=True,num_concurrent=1,max_length={MAX_LENGTH}")
    lm = get_model("local-completions").create_from_arg_string(model_args)
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
                ctx_enc, cont_enc = lm._encode_pair(context, continuation)
                (inp,), (ctxlen,), _ = lm.batch_loglikelihood_requests([[(None, ctx_enc, cont_enc)]])
                by_ids[tuple(inp)] = {"task": task, "doc_id": sample["doc_id"], "choice": choice,
                                      "ctxlen": ctxlen, "loglikelihood": lls[choice],
                                      "is_greedy": sample["resps"][choice][0][1]}
    return model_args.replace(proxy_url, "<proxy>").replace(str(model), rel(model)), by_ids, docs, results


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
            # Means of identical 0/1 items agree but for summation order.
            same = mine == v or (isinstance(mine, float) and isinstance(v, float) and abs(mine - v) <= 1e-12)
            if not same:
                problems.append(f"{task} {k}: ckpt {mine!r} vs lm-eval {v!r}")
    return problems, worst, n, metrics


# -- the OpenAI SDK ---------------------------------------------------------------------

def sdk_checks(proxy, recorder):
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="not-needed", max_retries=0)
    checks = {}

    def check(name, ok, detail=""):
        checks[name] = bool(ok)
        print(f"{'ok' if ok else 'FAILED':6}  {name}" + (f": {detail}" if detail and not ok else ""))

    recorder.client = "openai:models"
    models = client.models.list()
    check("models lists the served model", [m.id for m in models.data] == [MODEL_NAME])

    recorder.client = "openai:chat"
    chat = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=24, temperature=0,
                                          logprobs=True, top_logprobs=2)
    text = chat.choices[0].message.content
    check("chat answers", chat.object == "chat.completion" and isinstance(text, str)
          and chat.usage.completion_tokens == len(chat.choices[0].logprobs.content), chat)

    recorder.client = "openai:chat-stream"
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=24, temperature=0,
                                                 logprobs=True, top_logprobs=2, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    streamed_lps = [t.token for c in chunks if c.choices and c.choices[0].logprobs
                    for t in c.choices[0].logprobs.content]
    check("streamed chat deltas concatenate to the text", deltas == text, f"{deltas!r} vs {text!r}")
    check("streamed chat log-probabilities are the tokens'",
          streamed_lps == [t.token for t in chat.choices[0].logprobs.content])
    check("streamed chat chunks", all(c.object == "chat.completion.chunk" for c in chunks)
          and chunks[-2].choices[0].finish_reason == chat.choices[0].finish_reason)
    last = chunks[-1]
    check("the last chunk carries the usage", last.choices == [] and last.usage is not None
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
    check("echo returns the prompt's log-probabilities, the first null",
          echo.choices[0].text.startswith(ECHO_PROMPT) and lp.token_logprobs[0] is None
          and lp.top_logprobs[0] is None
          and all(isinstance(x, float) for x in lp.token_logprobs[1:])
          and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n_tokens
          and "".join(lp.tokens) == echo.choices[0].text and lp.text_offset == offsets, echo)
    check("echo's top log-probabilities hold the greedy ones",
          all(len(top) <= 2 and max(top.values()) >= tok - 1e-6 for top, tok in
              zip(lp.top_logprobs[1:], lp.token_logprobs[1:])))

    recorder.client = "openai:completion-stream"
    plain = client.completions.create(model=MODEL_NAME, prompt=ECHO_PROMPT, max_tokens=4, temperature=0)
    pieces = list(client.completions.create(model=MODEL_NAME, prompt=ECHO_PROMPT, max_tokens=4, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    check("streamed completion concatenates to the text",
          "".join(c.choices[0].text for c in pieces if c.choices) == plain.choices[0].text
          and pieces[-1].usage.model_dump() == plain.usage.model_dump())

    recorder.client = "openai:seeded"
    seeded = [client.completions.create(model=MODEL_NAME, prompt=SEEDED_PROMPT, max_tokens=16, temperature=1.0,
                                        top_p=0.95, seed=7).choices[0].text for _ in range(2)]
    check("a seed reproduces a sampled completion", seeded[0] == seeded[1], seeded)
    return checks


# -- the fixture ------------------------------------------------------------------------

def prompt_ids(request):
    """The one token-id prompt of a local-completions request (batch size 1)."""
    prompt = request["prompt"]
    return tuple(prompt[0] if prompt and isinstance(prompt[0], list) else prompt)


def select_exchanges(records, by_ids, ckpt_lls):
    """Per lm-eval task its longest request (context truncated on the left) and its
    shortest, annotated with what lm-eval and ckpt eval made of them; every SDK
    exchange."""
    kept, per_task = [], {}
    for r in records:
        if r["client"] == "lm-eval" and r["path"] == "/v1/completions":
            what = by_ids.get(prompt_ids(r["request"]))
            if what is not None:
                per_task.setdefault(what["task"], []).append((r, what))
    for task, rs in per_task.items():
        rs.sort(key=lambda x: len(prompt_ids(x[0]["request"])))
        for r, what in [rs[-1], rs[0]][:LM_EVAL_KEPT]:
            lm = {k: what[k] for k in ("task", "doc_id", "choice", "ctxlen", "loglikelihood", "is_greedy")}
            lm["ckpt_eval"] = ckpt_lls[(task, what["doc_id"])][what["choice"]]
            kept.append({**{k: v for k, v in r.items() if k != "seq"}, "lm_eval": lm})
    kept += [{k: v for k, v in r.items() if k != "seq"} for r in records if r["client"].startswith("openai:")]
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
    import logging
    logging.getLogger("lm-eval").setLevel(logging.WARNING)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    versions = {"lm_eval": lm_eval.__version__, "openai": openai.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "datasets": datasets.__version__, "python": platform.python_version()}
    print(", ".join(f"{k} {v}" for k, v in versions.items()))
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        eval_docs = max(SYNTH["eval_docs"], args.limit)
        run_ckpt(CKPT, ["synth", "--eval-tasks", str(data_dir), "--seed", str(SYNTH["seed"]),
                        "--entities", str(SYNTH["entities"]), "--eval-docs", str(eval_docs), "-q"])
        server, upstream = start_serve(CKPT, model, tmp)
        proxy = Proxy(upstream)
        try:
            proxy.recorder.client = "lm-eval"
            model_args, by_ids, theirs, their_results = lm_eval_run(
                proxy.url, model, args.tasks, args.limit, data_dir, TaskManager())
            ours, our_results = ckpt_eval_run(model, args.tasks, args.limit, data_dir, tmp)
            eval_problems, worst, n, metrics = compare_eval(theirs, ours, their_results, our_results)
            problems += eval_problems
            lm_requests = [r for r in proxy.recorder.records if r["client"] == "lm-eval"]
            print(f"lm-eval local-completions vs ckpt eval: {n} requests ({len(lm_requests)} HTTP exchanges), "
                  f"max |dll| {worst:.2e}")
            for task, ms in metrics.items():
                print(f"  {task}: " + ", ".join(f"{k} {v['lm_eval']} / {v['ckpt']}" for k, v in ms.items()
                                                if "stderr" not in k))
            for p in eval_problems[:10]:
                print(f"  DIFFERENT {p}")
            checks = sdk_checks(proxy.url, proxy.recorder)
            fingerprint = json.loads(
                urllib.request.urlopen(f"{upstream}/v1/models").read())["data"][0]["fingerprint"]
        finally:
            proxy.close()
            server.kill()
            server.wait()
        checks["lm-eval log-likelihoods within 1e-4"] = worst < LL_TOLERANCE and n > 0
        checks["lm-eval metrics equal"] = not eval_problems
        problems += [f"check failed: {k}" for k, v in checks.items() if not v]
        failed_http = [r for r in proxy.recorder.records if r["status"] >= 400 and r["path"].startswith("/v1/")]
        problems += [f"HTTP {r['status']} on {r['method']} {r['path']}: {r.get('response')}" for r in failed_http]
        summary = {
            "about": "ckpt serve answered lm-evaluation-harness's local-completions and the OpenAI Python SDK "
                     "(scripts/check_serve_clients.py); tests/serve_clients.rs replays exchanges.jsonl",
            "command": "~/.venvs/ckpt-ref/bin/python scripts/check_serve_clients.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
                for k, v in [("tasks", args.tasks), ("limit", args.limit)]),
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
                "http_exchanges": len(lm_requests),
                "max_abs_diff": worst,
                "tolerance": LL_TOLERANCE,
            },
            "ckpt_eval": f"ckpt eval CKPT --tasks {','.join(args.tasks)} --num-fewshot 0 --limit {args.limit} "
                         f"--add-bos-token false --max-length {MAX_LENGTH - 2} --output DIR --json",
            "metrics": metrics,
            "metrics_equal": not eval_problems,
            "checks": checks,
            "problems": problems,
            "passed": not problems,
        }
        ckpt_lls = {k: v["lls"] for k, v in ours.items()}
        exchanges = select_exchanges(proxy.recorder.records, by_ids, ckpt_lls)
    if not args.no_fixture:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        (FIXTURES / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (FIXTURES / "exchanges.jsonl").write_text("".join(json.dumps(e) + "\n" for e in exchanges))
        for f in ("summary.json", "exchanges.jsonl"):
            print(f"wrote {rel(FIXTURES / f)} ({(FIXTURES / f).stat().st_size} bytes)")
    if problems:
        sys.exit(f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems[:20]))
    print("all checks passed")


CKPT = None

if __name__ == "__main__":
    main()
