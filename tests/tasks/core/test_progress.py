"""A training stage's progress: the artifact every few percent, a log line with it, and a line for
every held-out evaluation the loop reports."""

import prefect
import prefect.artifacts

from tasks.core.progress import progress_reporter


def test_progress_lines_every_few_percent_and_every_heldout_evaluation(monkeypatch):
    lines, percents = [], []

    class Logger:
        def info(self, message, *args):
            lines.append(message % args)

    monkeypatch.setattr(prefect, "get_run_logger", Logger)
    monkeypatch.setattr(prefect.artifacts, "create_progress_artifact", lambda progress, description: "artifact")
    monkeypatch.setattr(prefect.artifacts, "update_progress_artifact",
                        lambda artifact, progress: percents.append(progress))
    report = progress_reporter("SFT")
    for step in range(1, 101):
        p = {"step": step, "steps": 100, "loss": 2.0}
        if step % 50 == 0:
            p["heldout_loss"] = 1.5
        report(p)
    assert percents == [1.0] + [float(x) for x in range(5, 101, 5)]  # the first step, then every 5%
    assert [line for line in lines if "held-out" in line] == ["SFT step 50/100 held-out loss 1.5000",
                                                              "SFT step 100/100 held-out loss 1.5000"]
