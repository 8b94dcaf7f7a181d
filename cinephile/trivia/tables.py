"""The README's tables of the trivia results files (``cinephile.report`` renders every results file)."""

from __future__ import annotations

from cinephile.markdown import interval_text, num, table


def trivia_tables(record: dict) -> str:
    """``results/trivia.json``: EM / F1 per row on each evaluation set, the paired intervals and retrieval."""
    sets = {"validation": "film-disjoint validation", "external": "HotpotQA film questions (external test)"}
    rows = []
    for key, label in sets.items():
        for r in record["results"].get(key, []):
            rows.append([label, r["row"], f"{r['em']:.1f}", f"{r['f1']:.1f}", str(r["n"])])
    results = table(["evaluation set", "row", "EM", "F1", "n"], rows)
    paired = table(["EM(tuned + retrieved) − EM(base + retrieved)", "difference", "paired bootstrap 95% interval",
                    "beats?"],
                   [[sets[k], f"{p['diff']:+.1f}", f"[{p['lo']:+.1f}, {p['hi']:+.1f}]",
                     "**yes** (interval above 0)" if p["beats"] else "no (interval includes 0)"]
                    for k, p in record["paired_em_tuned_vs_base"].items()])
    off = record.get("off_the_shelf")
    if off:
        tuned_row = "EM / F1(tuned + retrieved) − " + off["best_row"] + " (best off-the-shelf on validation)"
        paired += "\n\n" + table(
            [tuned_row, "EM difference [95% interval]", "F1 difference [95% interval]", "beats?"],
            [[sets[k], interval_text(p["em"]), interval_text(p["f1"]),
              "**yes** (EM interval above 0)" if p["em"]["beats"] else
              ("no: behind (EM interval below 0)" if p["em"]["hi"] < 0 else "no (EM interval includes 0)")]
             for k, p in off["paired_tuned_vs_best"].items()])
    ext = (record["retrieval"].get("external") or {}).get("retrieval_192", {})
    retrieval = table(["retriever", "HotpotQA R@1 (192-token chunks)", "R@2", "R@3"],
                      [[name, num(r["recall@1"]), num(r["recall@2"]), num(r["recall@3"])]
                       for name, r in ext.items()])
    s = record["settings"]
    fed = (f"Reader context: top {s['top_k']} chunks of {s['chunk_tokens']} tokens, BM25 weight "
           f"{s['lexical_weight']}; it holds the evidence for "
           f"{100 * record['retrieval']['validation_split']['context_recall']:.0f}% of the sample questions and "
           f"{100 * (record['retrieval'].get('external') or {}).get('context_recall', float('nan')):.0f}% of the "
           f"HotpotQA questions. Default run: {record['wall_time_min']:.1f} min.")
    return "\n\n".join([results, paired, retrieval, fed])


def trivia_ablation_table(record: dict) -> str:
    """``results/trivia_ablation.json``: one reader per step, film-disjoint validation EM / F1."""
    return table(["step (each adds one change)", "training questions", "training time", "fed-context recall",
                  "EM", "F1", "EM single-hop", "EM comparison"],
                 [[r["name"], str(r["n_train"]), f"{r['train_min']:.1f} min", num(r["val_context_recall"], 2),
                   f"{r['em_all']:.1f}", f"{r['f1_all']:.1f}", f"{r['em_single']:.1f}",
                   f"{r['em_comparison']:.1f}"] for r in record["rows"]])


REPLIES = {"answer": "answer", "quote": "evidence, then answer"}  # TriviaConfig.answer_format


def instruct_reader_table(record: dict) -> str:
    """``results/trivia_instruct.json``: tuned instruct readers against the same model read off the shelf."""
    rows = []
    for r in record["rows"]:
        score = {name: {x["row"]: x for x in rows_} for name, rows_ in r["results"].items()}
        tuned = {name: s["tuned + retrieved context"] for name, s in score.items()}
        shelf = {name: s[r["best_off_the_shelf"]] for name, s in score.items()}
        paired = r["paired_tuned_vs_best"]
        kinds = {k["row"]: k for k in r.get("validation_em_by_kind", [])}
        written = [kinds.get(name, {}).get("generated") for name in ("tuned + retrieved context", r["best_off_the_shelf"])]
        best_prompt = "evidence first" if "evidence first" in r["best_off_the_shelf"] else "answer only"
        rows.append([r["name"], f"{r['n_train']} ({r['lr']:g}, seed {r['seed']})",
                     f"{r['top_k']} x {r['chunk_tokens']} tokens", REPLIES[r.get("answer_format", "answer")],
                     best_prompt,
                     f"{tuned['validation']['em']:.1f} / {shelf['validation']['em']:.1f}",
                     "–" if None in written else f"{written[0]:.1f} / {written[1]:.1f}",
                     f"{tuned['external']['em']:.1f} / {tuned['external']['f1']:.1f}",
                     f"{shelf['external']['em']:.1f} / {shelf['external']['f1']:.1f}",
                     interval_text(paired["external"]["em"]), interval_text(paired["external"]["f1"]),
                     f"{r['seconds']['per_step']:.0f} s"])
    out = table(["tuned instruct reader (chat prompt, retrieved context)", "training prompts (lr, seed)",
                 "chunks fed", "tuned reader's reply", "off-the-shelf prompt (best on validation)",
                 "validation EM: tuned / off the shelf", "of it, written questions", "HotpotQA EM / F1: tuned", "off the shelf",
                 "HotpotQA EM: tuned − off the shelf [95%]", "F1 difference [95%]",
                 "training time per step (with validation loss)"], rows)
    if record.get("ablation"):
        out += "\n\n" + instruct_ablation_table(record["ablation"])
    return out


def instruct_ablation_table(steps: list[dict]) -> str:
    """The ablation of ``results/trivia_instruct.json`` (``instruct_ablation.ablation``): one change per line."""
    def arrow(before, after, digits=1):
        return f"{num(before, digits)} → {num(after, digits)}"

    def setting(value):
        return "(" + ", ".join(map(str, value)) + ")" if isinstance(value, list) else str(value)

    rows = []
    for step in steps:
        val, ext = step["validation"], step["external"]
        sizes = val["before"]["n"], val["after"]["n"]
        em = arrow(val["before"]["em"], val["after"]["em"])
        if sizes[0] != sizes[1]:
            em += f" ({sizes[0]} → {sizes[1]} questions)"
        paired = step["paired"]
        if paired:
            diff = interval_text(paired["em"])
            if not sizes[0] == sizes[1] == paired["em"]["n"]:
                diff += f" on the {paired['em']['n']} shared questions"
        elif sizes[0] == sizes[1]:
            diff = f"{val['after']['em'] - val['before']['em']:+.1f} (not paired)"
        else:
            diff = "–"
        differs = "; ".join(f"{k} {setting(a)} → {setting(b)}" for k, (a, b) in step.get("differs", {}).items())
        rows.append([step["change"], "the model off the shelf" if step["against"] is None else step["against"],
                     str(step["seed"]), differs or "–", em,
                     *(arrow(*val["kinds"][k]) for k in ("single", "comparison")), diff,
                     arrow(ext["before"]["em"], ext["after"]["em"])])
    return table(["change", "against (row)", "seed", "recorded settings that differ", "validation EM: before → after",
                  "single-hop", "comparison", "EM difference (paired [95%] where both rows kept their scores)",
                  "HotpotQA EM (reference, never chosen on)"], rows)


def contexts_table(record: dict) -> str:
    """``results/trivia_contexts.json``: fed-context recall and the off-the-shelf reader per distractor setting and k."""
    rows = []
    for r in record["rows"]:
        recall = r["recall"]
        kinds = r["validation"].get("em_by_kind", {})
        rows.append([r["distractors"], f"{r['top_k']} x {r['chunk_tokens']}", f"{r['validation_tokens']:.0f}",
                     num(recall["training"], 2), num(recall["validation"], 2), num(recall.get("external"), 2),
                     f"{r['validation']['em']:.1f} / {r['validation']['f1']:.1f}",
                     " / ".join(num(kinds.get(k), 1) for k in ("single", "comparison"))])
    out = table(["distractor films beside the question's", "chunks fed (tokens)", "mean tokens fed (validation)",
                 "fed-context recall: training", "validation", "HotpotQA (reference)",
                 "off the shelf, validation EM / F1", "EM single-hop / comparison"], rows)
    paired = record.get("paired_most_vs_fewest_chunks", {})
    more, fewer = paired.get("more"), paired.get("fewer")
    lines = [[label, interval_text(p["em"]), interval_text(p["f1"])]
             for label, p in paired.items() if label not in ("more", "fewer")]
    if lines:
        out += "\n\n" + table(["distractor films", f"off the shelf, validation EM: {more} − {fewer} chunks [95%]",
                                 "F1 difference [95%]"], lines)
    return out
