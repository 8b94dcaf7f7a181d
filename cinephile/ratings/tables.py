"""The README's tables of the rating model's results files (``cinephile.report`` renders every results file)."""

from __future__ import annotations

from cinephile.markdown import num, table


def models_table(models: list[dict]) -> str:
    seeded = any(m.get("n_seeds") for m in models)
    header = ["model", "RMSE", "MAE", "Pearson", "Spearman", "n pairs"] + (["RMSE over seeds, mean ± sd"] if seeded else [])
    return table(header, [[m["model"], num(m["rmse"], 4), num(m["mae"]), num(m["pearson"]), num(m["spearman"]),
                          str(m["n"])] + ([f"{m['rmse_seeds_mean']:.4f} ± {m['rmse_seeds_sd']:.4f} "
                                           f"({int(m['n_seeds'])} seeds)" if m.get("n_seeds") else ""] if seeded else [])
                         for m in models])


def intervals_table(intervals: list[dict]) -> str:
    by_user = any(i.get("n_users") for i in intervals)
    return table(["RMSE(model) − RMSE(baseline), same test pairs", "difference",
                 "paired bootstrap 95% interval" + (" (users resampled)" if by_user else ""), "beats?"],
                 [[f"{i['model']} vs {i['against']}", f"{i['rmse_diff']:+.4f}",
                  f"[{i['ci95_lo']:+.4f}, {i['ci95_hi']:+.4f}]",
                  "**yes** (interval below 0)" if i["beats"] else "no (interval includes 0)"]
                 for i in intervals])


def ratings_tables(record: dict) -> str:
    """The model table and the paired-interval table of ``results/ratings.json``, then the same per slice."""
    parts = [models_table(record["models"]), intervals_table(record["intervals"])]
    for name, part in record.get("slices", {}).items():
        parts.append(f"Slice: {name} ({part['n']} pairs)\n\n" + models_table(part["models"])
                     + ("\n\n" + intervals_table(part["intervals"]) if part["intervals"] else ""))
    return "\n\n".join(parts)


def large_run_table(record: dict) -> str:
    """``results/ratings_large.json``: per slice, the tuned model's RMSE against tuned SVD++ and the paired interval."""
    rows, svdpp = [], next(i["against"] for i in record["intervals"] if i["against"].startswith("SVD++"))
    parts = {"all test pairs": record} | record["slices"]
    for name, part in parts.items():
        rmse = {m["model"]: m["rmse"] for m in part["models"]}
        against = next(i for i in part["intervals"] if i["against"].startswith("SVD++"))
        rows.append([name, str(against["n"]), num(rmse[record["reported"]], 4), num(rmse[against["against"]], 4),
                     f"{against['rmse_diff']:+.4f}", f"[{against['ci95_lo']:+.4f}, {against['ci95_hi']:+.4f}]",
                     "**yes**" if against["beats"] else "no"])
    minutes = record["timings_s"]["training_s"] / 60
    return (f"{record['n_train_examples']:,} training instructions, trained in {minutes:.1f} min; "
            f"{record['n_test_pairs']:,} test pairs of {record['n_users']} users\n\n"
            + table(["slice", "n pairs", record["reported"], svdpp, "difference", "95% interval (users "
                      "resampled)", "beats SVD++?"], rows))


def variants_table(record: dict) -> str:
    """``results/ratings_variants.json``: validation RMSE of each variant and of the recommenders."""
    return table(["variant (validation split)", "training instructions", "training time", "validation RMSE",
                  "n pairs"],
                 [[r["variant"], str(r.get("n_train", "–")),
                   f"{r['train_s'] / 60:.1f} min" if r.get("train_s") is not None else "–",
                   num(r["val_rmse"], 4), str(r["val_n"])] for r in record["rows"]])


def rating_speed_table(record: dict) -> str:
    """``results/bench_rating_speed.json``: scoring and training with a user's history run once, against whole prompts."""
    s, t = record["scoring"], record["training"]
    own, shared = t["own history"], t["shared history"]
    return table(["measurement", "whole prompts, each its own history", "one history per user, run once", "ratio"], [
        [f"(a) scoring {s['prompts']:,} test prompts of {s['users']} users ({s['mean_prompt_tokens']:.0f} tokens; "
         f"the shared history {s['mean_shared_tokens']:.0f}; tokens run {s['tokens_run_ratio']:.2f}x)",
         f"{s['whole_s']:.1f} s", f"{s['shared_s']:.1f} s", f"**{s['ratio']:.2f}x**"],
        [f"(b) one training epoch, {own['instructions']:,} instructions of {own['users']} users "
         f"({t['per_user']} per user; {own['mean_prompt_tokens']:.0f} / {shared['mean_prompt_tokens']:.0f} tokens)",
         f"{own['seconds']:.1f} s ({own['per_instruction_s']:.3f} s each)",
         f"{shared['seconds']:.1f} s ({shared['per_instruction_s']:.3f} s each)", f"**{t['ratio']:.2f}x**"]])


def study_table(record: dict) -> str:
    """``results/ratings_study.json``: the optuna trials on the validation pairs, best first, and the references."""
    trials = sorted(record["trials"], key=lambda t: t["val_rmse"])
    rows = [[f"trial {t['trial']}" + (" (best)" if t["trial"] == record["best"]["trial"] else ""), str(t["r"]),
             f"{t['lr']:.2g}", str(t["per_user"]), f"{t['rating_lambda']:.2g}", str(t["n_train"]),
             f"{t['train_s'] / 60:.1f} min", num(t["val_rmse"], 4), str(t["val_n"])] for t in trials]
    rows += [[r["variant"], "–", "–", "–", "–", "–", "–", num(r["val_rmse"], 4), str(r["val_n"])]
             for r in record["references"]]
    return table(["trial (validation split)", "rank", "learning rate", "instructions per user", "lambda",
                  "training instructions", "training time", "validation RMSE", "n pairs"], rows)
