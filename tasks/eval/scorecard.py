"""The evaluation part of the report card: every score with its n, its 95% interval and the trivial
baselines beside it, and differences between models called out only where their interval excludes
zero. Pure rendering of evaluate-model's and reward-check's results.
"""

from __future__ import annotations

from tasks.core.stats import paired_difference

CHAT_MODELS = ("sft", "rlhf", "dpo")


def _cell(result: dict | None) -> str:
    if not result:
        return "–"
    return f"{result['accuracy']:.3f} [{result['low']:.2f}, {result['high']:.2f}]"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def chat_models(scores: dict[str, dict]) -> list[str]:
    """The models scored on the skills: this run's SFT, RLHF and DPO models first, then any others."""
    chat = [m for m in scores if "skills" in scores[m]]
    return sorted(chat, key=lambda m: (CHAT_MODELS.index(m) if m in CHAT_MODELS else len(CHAT_MODELS), m))


def skills_section(scores: dict[str, dict]) -> list[str]:
    chat = chat_models(scores)
    if not chat:
        return []
    first = scores[chat[0]]["skills"]
    k = next((key for key in first[next(iter(first))] if key.startswith("pass@")), None)
    out = ["### The synthetic world's skills (held-out questions)", "",
           "Greedy accuracy, strictly parsed (tasks/chat/verifiers.py), on n distinct questions never trained "
           "on, with a 95% Wilson interval. *constant*: one reply for every question (the most common answer "
           "in the checked form); *refuse*: always \"I don't know.\"" + (
               f" {k}: from {k[5:]} samples at temperature {first[next(iter(first))]['temperature']}." if k else ""),
           ""]
    header = ["skill", "n", "constant", "refuse"] + [f"{m}" for m in chat] + ([f"{m} {k}" for m in chat] if k else [])
    rows = []
    for skill, base in first.items():
        row = [skill, base["n"], f"{base['baselines']['constant']:.3f}", f"{base['baselines']['always refuse']:.3f}"]
        row += [_cell(scores[m]["skills"].get(skill)) for m in chat]
        row += [_cell(scores[m]["skills"].get(skill, {}).get(k)) for m in chat] if k else []
        rows.append(row)
    out += [_table(header, rows)]
    if "known" in first:
        out += ["False refusals (known facts answered \"I don't know\"): " + ", ".join(
            f"{m} {scores[m]['skills']['known']['refusal_rate']:.3f}" for m in chat) + "; refusals on unknown "
            "names: " + ", ".join(f"{m} {scores[m]['skills'].get('unknown', {}).get('refusal_rate', 0):.3f}"
                                 for m in chat) + ".", ""]
    small = [s for s, r in first.items() if r["high"] - r["low"] > 0.3]
    if small:
        out += [f"Too few questions to tell models apart on: {', '.join(small)} (intervals wider than 0.3).", ""]
    return out + differences(scores, chat)


def differences(scores: dict[str, dict], chat: list[str]) -> list[str]:
    """Each chat model − the first (SFT) per skill on the same questions; 'no difference shown'
    unless the interval excludes zero."""
    if len(chat) < 2:
        return []
    a, rows = chat[0], []
    for b in chat[1:]:
        for skill, ra in scores[a]["skills"].items():
            rb = scores[b]["skills"].get(skill)
            if not rb or len(ra["correct"]) != len(rb["correct"]):
                continue
            d = paired_difference(ra["correct"], rb["correct"])
            rows.append([f"{b} − {a}", skill, d.n, str(d), "yes" if d.significant else "no difference shown"])
    return ["Differences on the same questions (Newcombe's 95% interval for paired proportions):", "",
            _table(["models", "skill", "n", "difference", "beyond noise"], rows)]


def benchmarks_section(scores: dict[str, dict], sets: dict) -> list[str]:
    models = [m for m in scores if scores[m].get("benchmarks")]
    out = ["### Benchmarks", ""]
    for name, info in sets.items():
        if "skipped" in info:
            out += [f"- **{name}**: not run ({info['skipped']})"]
    out += [""]
    for name, info in sets.items():
        if "skipped" in info:
            continue
        task = info["task"]
        out += [f"**{name}** ({info['source']}, {info['rows']} questions"
                + (", multiple choice" if task["kind"] == "choice" else ", final number parsed strictly") + ")", ""]
        settings = sorted({s for m in models for s in scores[m]["benchmarks"].get(name, {})})
        rows = []
        for setting in settings:
            results = {m: scores[m]["benchmarks"].get(name, {}).get(setting) for m in models}
            some = next(r for r in results.values() if r)
            baseline = (f"random {some['random_baseline']:.3f}, majority {some['majority_baseline']:.3f}"
                        if "random_baseline" in some else f"constant {some['constant_baseline']:.3f}")
            cut = max((r or {}).get("truncated", 0) for r in results.values())
            rows.append([setting, some["n"], baseline] + [_cell(results[m]) for m in models] + [cut])
        out += [_table(["setting", "n", "trivial baselines"] + models + ["prompts cut to fit"], rows)]
        centred = {m: scores[m]["benchmarks"].get(name, {}).get("continuation", {}).get("centred") for m in models}
        if any(v is not None for v in centred.values()):
            out += ["In-context metric (continuation likelihood, centred: 0 is chance, 1 is perfect): " + ", ".join(
                f"{m} {v:+.3f}" for m, v in centred.items() if v is not None) + ".", ""]
    return out


def reward_section(check: dict, scores: dict[str, dict]) -> list[str]:
    prefs = check["preferences"]
    out = ["### Reward model", "",
           f"Held-out pairwise accuracy {_cell(prefs['overall'])} on {prefs['overall']['n']} pairs (chance 0.5); "
           f"margin r(chosen) − r(rejected): p10 {prefs['margin']['p10']}, median {prefs['margin']['median']}, "
           f"p90 {prefs['margin']['p90']}; calibration error (ECE) {prefs['ece']}.", "",
           _table(["skill", "pairs", "accuracy"], [[s, r["n"], _cell(r)] for s, r in prefs["per_skill"].items()]),
           "Calibration: how often the chosen reply wins among pairs with σ(margin) in each bin.", "",
           _table(["σ(margin)", "pairs", "predicted", "observed"],
                  [[b["bin"], b["pairs"], b["predicted"], b["observed"]] for b in prefs["calibration"]])]
    if check["win_rate_vs_sft"]:
        out += ["Win rate against the SFT model's replies, judged by the reward model, beside the strict accuracy "
                "on the same questions (a win rate that rises while accuracy does not is the reward model being "
                "gamed):", ""]
        def strict(model: str) -> str:
            correct = [c for r in scores.get(model, {}).get("skills", {}).values() for c in r["correct"]]
            return f"{sum(correct) / len(correct):.3f}" if correct else "–"

        rows = [[m, win["n"], _cell(win), strict(m), strict("sft")] for m, win in check["win_rate_vs_sft"].items()]
        out += [_table(["model", "questions", "win rate vs SFT", "strict accuracy", "SFT's strict accuracy"], rows)]
    return out


def evaluation_section(scores: dict[str, dict], sets: dict, check: dict | None) -> list[str]:
    out = ["## Evaluation", ""]
    out += skills_section(scores)
    out += benchmarks_section(scores, sets)
    if check:
        out += reward_section(check, scores)
    examples = [(m, e) for m in chat_models(scores) for results in scores.get(m, {}).get("skills", {}).values()
                for e in results.get("examples", [])[:1]]
    if examples:
        out += ["Example replies, one per skill and model (*parsed*: what the checker read):", ""]
        out += [f"- {m}: **{e['prompt']}** → {e['reply']!r} (parsed: {e['parsed']}, "
                f"{'correct' if e['correct'] else 'wrong'})" for m, e in examples] + [""]
    return out
