//! The pure evaluation logic against values produced by CPython 3.11 and
//! lm-evaluation-harness 0.4.13 on synthetic inputs (fixtures made by
//! `scripts/make_pyrandom_fixture.py` and `scripts/make_eval_logic_fixtures.py`).
//! Floats in the fixtures are IEEE-754 bit patterns: comparisons are exact.

use ckpt::eval::drop;
use ckpt::eval::filters::{self, FilterStep};
use ckpt::eval::metrics::{self, Aggregation, ExactMatch, ExactMatchOptions, Gold};
use ckpt::eval::preprocess::{self, hellaswag_clean, winogrande, WinograndeParts};
use ckpt::eval::pyrandom::{FewshotSampler, PyRandom, SamplerKind};
use ckpt::eval::pyregex::{Found, PyRegex};
use ckpt::eval::pystr;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A float stored as the decimal string of its bits.
fn f(v: &Value) -> f64 {
    f64::from_bits(v.as_str().expect("float bits as a string").parse().unwrap())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

#[test]
fn cpython_random_sequences() {
    let fx = fixture("pyrandom.json");
    for case in fx["generators"].as_array().unwrap() {
        let seed: i128 = case["seed"].as_str().unwrap().parse().unwrap();
        let mut rng = PyRandom::new(seed);
        for x in case["random"].as_array().unwrap() {
            assert!(same(rng.random(), f(x)), "seed {seed}");
        }
        for kv in case["getrandbits"].as_array().unwrap() {
            let k = kv[0].as_u64().unwrap() as u32;
            let want: u64 = kv[1].as_str().unwrap().parse().unwrap();
            assert_eq!(rng.getrandbits(k), want, "seed {seed} getrandbits({k})");
        }
        for kv in case["randbelow"].as_array().unwrap() {
            assert_eq!(
                rng.randbelow(kv[0].as_u64().unwrap()),
                kv[1].as_u64().unwrap()
            );
        }
        for s in case["sample"].as_array().unwrap() {
            let (n, k) = (
                s["n"].as_u64().unwrap() as usize,
                s["k"].as_u64().unwrap() as usize,
            );
            let want: Vec<usize> = serde_json::from_value(s["result"].clone()).unwrap();
            assert_eq!(
                rng.sample(n, k).unwrap(),
                want,
                "seed {seed} sample({n}, {k})"
            );
        }
        let mut xs: Vec<usize> = (0..20).collect();
        rng.shuffle(&mut xs);
        assert_eq!(
            xs,
            serde_json::from_value::<Vec<usize>>(case["shuffle20"].clone()).unwrap()
        );
        let ch = &case["choices"];
        let want: Vec<usize> = serde_json::from_value(ch["result"].clone()).unwrap();
        assert_eq!(rng.choices(7, 12), want);
        assert!(same(rng.random(), f(&case["after"])));
    }
}

#[test]
fn lm_eval_fewshot_selection() {
    let fx = fixture("pyrandom.json");
    for case in fx["samplers"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = match case["kind"].as_str().unwrap() {
            "random" => SamplerKind::Random,
            _ => SamplerKind::FirstN,
        };
        let pool = strings(&case["pool"]);
        let n = case["num_fewshot"].as_u64().unwrap() as usize;
        let same_split = case["same_split_as_eval"].as_bool().unwrap();
        let seed = case["seed"].as_i64().unwrap() as i128;
        let mut sampler = FewshotSampler::new(seed, pool.len(), kind, same_split);
        let shots = case["shots"].as_array().unwrap();
        for (j, eval_key) in strings(&case["eval"]).iter().enumerate() {
            // lm-eval compares documents by content: every copy of the evaluated
            // document is excluded.
            let picked = sampler.select_with(n, |i| &pool[i] == eval_key).unwrap();
            let keys: Vec<String> = picked.iter().map(|&i| pool[i].clone()).collect();
            assert_eq!(keys, strings(&shots[j]), "{name}, evaluated document {j}");
        }
    }
}

#[test]
fn python_str_semantics() {
    let fx = &fixture("logic.json")["pystr"];
    for c in fx["capitalize"].as_array().unwrap() {
        let s = c[0].as_str().unwrap();
        assert_eq!(
            pystr::capitalize(s),
            c[1].as_str().unwrap(),
            "{s:?}.capitalize()"
        );
    }
    for c in fx["strip"].as_array().unwrap() {
        let s = c[0].as_str().unwrap();
        assert_eq!(pystr::strip(s), c[1].as_str().unwrap());
        assert_eq!(pystr::rstrip(s), c[2].as_str().unwrap());
        assert_eq!(pystr::split_whitespace(s), strings(&c[3]));
    }
    for c in fx["lower"].as_array().unwrap() {
        assert_eq!(pystr::lower(c[0].as_str().unwrap()), c[1].as_str().unwrap());
    }
    for c in fx["parse_float"].as_array().unwrap() {
        let s = c[0].as_str().unwrap();
        let got = pystr::parse_float(s);
        match &c[1] {
            Value::Null => assert_eq!(got, None, "float({s:?}) raises"),
            bits => assert!(
                got.is_some_and(|g| same(g, f(bits))),
                "float({s:?}) = {got:?}, want {}",
                f(bits)
            ),
        }
    }
    for c in fx["float_repr"].as_array().unwrap() {
        assert_eq!(pystr::float_repr(f(&c[0])), c[1].as_str().unwrap());
    }
    for c in fx["round"].as_array().unwrap() {
        let (x, n) = (f(&c[0]), c[1].as_u64().unwrap() as usize);
        assert!(same(pystr::round(x, n), f(&c[2])), "round({x}, {n})");
    }
}

fn found_to_json(found: Vec<Found>) -> Value {
    Value::Array(
        found
            .into_iter()
            .map(|f| match f {
                Found::Text(t) => Value::String(t),
                Found::Groups(g) => Value::Array(g.into_iter().map(Value::String).collect()),
            })
            .collect(),
    )
}

#[test]
fn python_re_findall_and_sub() {
    let fx = fixture("logic.json");
    for p in fx["regex"].as_array().unwrap() {
        let pattern = p["pattern"].as_str().unwrap();
        let re = PyRegex::new(pattern).unwrap();
        for c in p["cases"].as_array().unwrap() {
            let text = c[0].as_str().unwrap();
            assert_eq!(
                found_to_json(re.findall(text).unwrap()),
                c[1],
                "re.findall({pattern:?}, {text:?})"
            );
            assert_eq!(
                re.sub(text, "<>").unwrap(),
                c[2].as_str().unwrap(),
                "re.sub({pattern:?}, '<>', {text:?})"
            );
        }
    }
}

#[test]
fn lm_eval_filter_pipelines() {
    let fx = fixture("logic.json");
    for p in fx["filters"].as_array().unwrap() {
        let steps: Vec<FilterStep> = serde_json::from_value(p["steps"].clone()).unwrap();
        for c in p["cases"].as_array().unwrap() {
            let responses = strings(&c[0]);
            let got = filters::apply(&steps, &responses).unwrap();
            assert_eq!(
                got,
                c[1].as_str().unwrap(),
                "{} on {responses:?}",
                p["name"]
            );
        }
    }
}

#[test]
fn lm_eval_exact_match() {
    let fx = fixture("logic.json");
    for group in fx["exact_match"].as_array().unwrap() {
        let options: ExactMatchOptions = serde_json::from_value(group["options"].clone()).unwrap();
        let em = ExactMatch::new(options.clone()).unwrap();
        for c in group["cases"].as_array().unwrap() {
            let (pred, reference) = (c[0].as_str().unwrap(), c[1].as_str().unwrap());
            let got = em.score(pred, reference).unwrap();
            assert!(
                same(got, f(&c[2])),
                "{options:?}: {pred:?} vs {reference:?}"
            );
        }
    }
}

#[test]
fn lm_eval_multiple_choice_metrics() {
    let fx = &fixture("logic.json")["multiple_choice"];
    for c in fx["cases"].as_array().unwrap() {
        let choices = strings(&c["choices"]);
        let lls = floats(&c["lls"]);
        let greedy: Vec<bool> = serde_json::from_value(c["greedy"].clone()).unwrap();
        let gold = match &c["gold"] {
            Value::Number(n) => Gold::Index(n.as_i64().unwrap()),
            Value::Array(_) => Gold::Indices(serde_json::from_value(c["gold"].clone()).unwrap()),
            Value::String(s) => Gold::from_target(s, &choices),
            other => panic!("gold {other}"),
        };
        let scores = &c["scores"];
        let check = |name: &str, got: f64| {
            assert!(same(got, f(&scores[name])), "{name} of {c}: got {got}");
        };
        check("acc", metrics::acc(&lls, &gold).unwrap());
        check(
            "acc_norm",
            metrics::acc_norm(&lls, &choices, &gold).unwrap(),
        );
        check(
            "acc_bytes",
            metrics::acc_bytes(&lls, &choices, &gold).unwrap(),
        );
        check("exact_match", metrics::choice_exact_match(&greedy, &gold));
        if scores.get("acc_mutual_info").is_some() {
            let unc = floats(&c["unconditional"]);
            check(
                "acc_mutual_info",
                metrics::acc_mutual_info(&lls, &unc, &gold).unwrap(),
            );
        }
    }
    for c in fx["mc2"].as_array().unwrap() {
        let labels: Vec<i64> = serde_json::from_value(c["labels"].clone()).unwrap();
        let got = metrics::truthfulqa_mc2(&floats(&c["lls"]), &labels).unwrap();
        let want = f(&c["mc2"]);
        // numpy's vectorised exp may differ from libm's in the last bit.
        assert!(
            same(got, want) || (got - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
            "mc2 {got} vs {want}"
        );
    }
    for c in fx["agieval_mcqa"].as_array().unwrap() {
        let lls = floats(&c["lls"]);
        let choices = strings(&c["choices"]);
        let gold = Gold::Indices(serde_json::from_value(c["gold"].clone()).unwrap());
        assert!(same(metrics::acc(&lls, &gold).unwrap(), f(&c["acc"])));
        assert!(same(
            metrics::acc_norm(&lls, &choices, &gold).unwrap(),
            f(&c["acc_norm"])
        ));
    }
}

#[test]
fn lm_eval_aggregation_and_stderr() {
    let fx = &fixture("logic.json")["aggregation"];
    let lists = fx["lists"].as_object().unwrap();
    for (name, l) in lists {
        let xs = floats(&l["xs"]);
        let check = |key: &str, got: f64| {
            if let Some(want) = l.get(key) {
                assert!(same(got, f(want)), "{key} of {name}: {got} vs {}", f(want));
            }
        };
        check("mean", metrics::mean(&xs));
        check("median", metrics::median(&xs));
        check("nanmean", metrics::nanmean(&xs));
        check("sample_stddev", metrics::sample_stddev(&xs));
        check("mean_stderr", metrics::mean_stderr(&xs));
        check("perplexity", metrics::perplexity(&xs));
        if !name.contains("nan") {
            assert_eq!(
                Aggregation::Mean.stderr(&xs, 100_000),
                Some(metrics::mean_stderr(&xs))
            );
        }
    }
    for b in fx["bootstrap"].as_array().unwrap() {
        let xs = floats(&lists[b["list"].as_str().unwrap()]["xs"]);
        let agg = match b["aggregation"].as_str().unwrap() {
            "median" => Aggregation::Median,
            "perplexity" => Aggregation::Perplexity,
            "nanmean" => Aggregation::Nanmean,
            other => panic!("{other}"),
        };
        let iters = b["iters"].as_u64().unwrap() as usize;
        let got = agg.stderr(&xs, iters).unwrap();
        assert!(same(got, f(&b["stderr"])), "bootstrap {b}: {got}");
    }
    let w = &fx["weighted"];
    let pairs: Vec<(f64, f64)> = w["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (f(&p[0]), f(&p[1])))
        .collect();
    assert!(same(
        metrics::weighted_perplexity(&pairs),
        f(&w["weighted_perplexity"])
    ));
    assert!(same(metrics::bits_per_byte(&pairs), f(&w["bits_per_byte"])));
    let g = &fx["groups"];
    let (values, errs) = (floats_plain(&g["metrics"]), floats_plain(&g["stderrs"]));
    let sizes: Vec<usize> = serde_json::from_value(g["sizes"].clone()).unwrap();
    assert!(same(
        metrics::aggregate_subtask_metrics(&values, &sizes, true),
        f(&g["weighted"])
    ));
    assert!(same(
        metrics::aggregate_subtask_metrics(&values, &sizes, false),
        f(&g["unweighted"])
    ));
    assert!(same(
        metrics::pooled_sample_stderr(&errs, &sizes),
        f(&g["pooled_stderr"])
    ));
    assert!(same(
        metrics::unweighted_mean_stderr(&errs),
        f(&g["unweighted_stderr"])
    ));
    for c in fx["count_words"].as_array().unwrap() {
        let text = c[0].as_str().unwrap();
        assert_eq!(
            metrics::count_words(text),
            c[1].as_u64().unwrap() as usize,
            "{text:?}"
        );
        assert_eq!(text.len(), c[2].as_u64().unwrap() as usize);
    }
}

fn floats_plain(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn lm_eval_drop_scores() {
    let fx = &fixture("logic.json")["drop"];
    for c in fx["metrics"].as_array().unwrap() {
        let (pred, gold) = (strings(&c["pred"]), strings(&c["gold"]));
        let (em, f1) = drop::get_metrics(&pred, &gold).unwrap();
        assert!(
            same(em, f(&c["em"])) && same(f1, f(&c["f1"])),
            "{pred:?} vs {gold:?}: ({em}, {f1}) {c}"
        );
        let all: Vec<String> = pred.iter().chain(&gold).cloned().collect();
        for (s, want) in all.iter().zip(strings(&c["normalized"])) {
            assert_eq!(drop::normalize(s).unwrap(), want, "_normalize({s:?})");
        }
    }
    for d in fx["docs"].as_array().unwrap() {
        let answers = drop::get_answers(&d["doc"]).unwrap();
        let want: Vec<Vec<String>> = serde_json::from_value(d["answers"].clone()).unwrap();
        assert_eq!(answers, want);
        for (prediction, r) in d["results"].as_object().unwrap() {
            let got = drop::process_results(prediction, &answers).unwrap();
            assert!(
                same(got.em, f(&r[0])) && same(got.f1, f(&r[1])),
                "{prediction:?} on {}",
                d["doc"]
            );
        }
    }
    let originals: Vec<&Value> = fx["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["doc"])
        .collect();
    for (doc, want) in originals
        .into_iter()
        .zip(fx["process_docs"].as_array().unwrap())
    {
        assert_eq!(&preprocess::preprocess("drop", doc).unwrap(), want);
    }
}

#[test]
fn lm_eval_hellaswag_and_winogrande_documents() {
    let fx = &fixture("logic.json")["preprocess"];
    let hs = &fx["hellaswag"];
    for (doc, want) in hs["docs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(hs["processed"].as_array().unwrap())
    {
        assert_eq!(&preprocess::preprocess("hellaswag", doc).unwrap(), want);
    }
    for c in hs["clean"].as_array().unwrap() {
        assert_eq!(
            hellaswag_clean(c[0].as_str().unwrap()).unwrap(),
            c[1].as_str().unwrap()
        );
    }
    for p in fx["winogrande"]["parts"].as_array().unwrap() {
        let parts = winogrande(&p["doc"]).unwrap();
        let want = WinograndeParts {
            contexts: strings(&p["contexts"]),
            continuation: p["continuation"].as_str().unwrap().to_string(),
            gold: p["gold"].as_u64().unwrap() as usize,
        };
        assert_eq!(parts, want);
    }
}

/// Requests lm-eval built: per evaluated document, its `[context, continuation]` pairs.
fn requests(v: &Value) -> Vec<Vec<(String, String)>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn hellaswag_prompts_rebuilt_as_lm_eval_builds_them() {
    // HellaSwag: test_split and fewshot_split unset -> the evaluated document goes to
    // the sampler; the synthetic validation documents equal the first training ones,
    // so lm-eval's content comparison removes them from their own shots.
    let r = &fixture("logic.json")["preprocess"]["hellaswag"]["requests"];
    let process = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| preprocess::preprocess("hellaswag", d).unwrap())
            .collect()
    };
    let (train, val) = (process(&r["train"]), process(&r["validation"]));
    let n = r["num_fewshot"].as_u64().unwrap() as usize;
    let mut sampler = FewshotSampler::new(1234, train.len(), SamplerKind::Random, true);
    let answer = |d: &Value| {
        d["choices"][d["gold"].as_u64().unwrap() as usize]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (j, (doc, want)) in val.iter().zip(requests(&r["per_doc"])).enumerate() {
        let shots = sampler.select_with(n, |i| train[i] == *doc).unwrap();
        let mut context: String = shots
            .iter()
            .map(|&i| {
                format!(
                    "{} {}\n\n",
                    train[i]["query"].as_str().unwrap(),
                    answer(&train[i])
                )
            })
            .collect();
        context.push_str(doc["query"].as_str().unwrap());
        let got: Vec<(String, String)> = strings(&doc["choices"])
            .into_iter()
            .map(|c| (context.clone(), format!(" {c}")))
            .collect();
        assert_eq!(got, want, "document {j}");
    }
}

#[test]
fn winogrande_prompts_rebuilt_as_lm_eval_builds_them() {
    let r = &fixture("logic.json")["preprocess"]["winogrande"]["requests"];
    let parts = |v: &Value| -> Vec<WinograndeParts> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| winogrande(d).unwrap())
            .collect()
    };
    let (train, val) = (parts(&r["train"]), parts(&r["validation"]));
    let n = r["num_fewshot"].as_u64().unwrap() as usize;
    let mut sampler = FewshotSampler::new(1234, train.len(), SamplerKind::Random, true);
    for (j, (doc, want)) in val.iter().zip(requests(&r["per_doc"])).enumerate() {
        let shots: String = sampler
            .select(n, None)
            .unwrap()
            .iter()
            .map(|&i| {
                format!(
                    "{} {}\n\n",
                    train[i].contexts[train[i].gold], train[i].continuation
                )
            })
            .collect();
        let got: Vec<(String, String)> = doc
            .contexts
            .iter()
            .map(|c| (format!("{shots}{c}"), format!(" {}", doc.continuation)))
            .collect();
        assert_eq!(got, want, "document {j}");
    }
}
