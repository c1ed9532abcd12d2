"""The benchmark harness: suites, resumable CSV appends, the paper's normalization, the report."""

import csv
import math
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import speed
from benchmarks.harness import (
    CSV_FIELDS,
    CURVE_POINTS,
    PAPER_ENVS,
    PAPER_SETTINGS,
    append_row,
    finished_run_ids,
    paper_suite,
    read_curves,
    run_suite,
    tiny_suite,
    zoo_suite,
)
from benchmarks.report import (
    README_SPEED_BEGIN,
    README_SPEED_END,
    VALIDATION_BEGIN,
    VALIDATION_END,
    beta_plot_env,
    complete_envs,
    curve_label,
    headline_section,
    kl_within_tolerance,
    normalized_scores,
    rank_correlation,
    read_rows,
    read_speed_table,
    speed_summary,
    validation_summary,
    within_noise,
    write_report,
)
from benchmarks.speed import main as speed_main

REPOSITORY = Path(__file__).resolve().parent.parent


def test_paper_suite_is_the_full_sweep():
    runs = paper_suite()
    assert len(runs) == (len(PAPER_SETTINGS) + 1) * len(PAPER_ENVS) * 3  # + the random policy
    assert len({run.run_id for run in runs}) == len(runs)
    assert {run.timesteps for run in runs} == {200_000}
    none = next(run for run in runs if run.setting == "none")
    assert none.algo == "ppo_penalty" and none.hyperparameters["beta"] == 0.0 and none.hyperparameters["kl_target"] is None
    clip = next(run for run in runs if run.setting == "clip-0.3")
    assert clip.algo == "ppo_clip" and clip.hyperparameters["clip_range"] == 0.3
    assert clip.hyperparameters["n_steps"] == 2048 and clip.hyperparameters["batch_size"] == 64


def test_zoo_suite_compares_four_algorithms_on_the_same_budget():
    runs = zoo_suite(timesteps=5_000, envs=["CartPole-v1", "Hopper-v5"])
    by_env = {(run.env_id, run.algo) for run in runs}
    assert by_env == {
        (env, algo) for env in ("CartPole-v1", "Hopper-v5") for algo in ("ppo_penalty", "ppo_clip", "sb3_ppo", "trpo")
    }
    assert {run.timesteps for run in runs} == {5_000}
    hopper_ppo = next(run for run in runs if run.env_id == "Hopper-v5" and run.algo == "sb3_ppo")
    assert hopper_ppo.normalize and hopper_ppo.hyperparameters["batch_size"] == 32  # rl_zoo3's Hopper-v4 entry


def test_resume_appends_and_never_rewrites(tmp_path):
    csv_path = tmp_path / "tiny" / "runs.csv"
    runs = tiny_suite()
    assert run_suite(runs, csv_path, workers=2, max_runs=2) == 2
    first_bytes = csv_path.read_bytes()
    assert first_bytes.count(b"\n") == 3  # header + 2 rows

    # An interrupted suite re-run: the finished runs are skipped, the others appended
    assert run_suite(runs, csv_path, workers=2) == len(runs) - 2
    assert csv_path.read_bytes().startswith(first_bytes)
    assert finished_run_ids(csv_path) == {run.run_id for run in runs}
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(runs)
    assert run_suite(runs, csv_path, workers=2) == 0

    for row in rows:
        assert float(row["wall_time_s"]) > 0 and float(row["steps_per_s"]) > 0
        assert int(row["n_episodes"]) > 0
    # One learning curve per run (the raw Monitor logs are not kept)
    curves = read_curves(tmp_path / "tiny" / "curves.csv")
    assert set(curves) == {run.run_id for run in runs}
    assert all(timesteps == 512 and len(curve) == CURVE_POINTS for timesteps, curve in curves.values())
    assert not (tmp_path / "tiny" / "monitor").exists()
    assert (tmp_path / "tiny" / "beta").is_dir()

    # The report from those results
    markdown = write_report(tmp_path, tmp_path / "docs").read_text()
    assert "## Tiny suite" in markdown and "| CartPole-v1 |" in markdown and "(n=2)" in markdown
    assert (tmp_path / "docs" / "img" / "tiny_CartPole-v1.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "docs" / "img" / "tiny_beta_and_kl.png").read_bytes()[:4] == b"\x89PNG"
    beta_trace = (tmp_path / "tiny" / "beta" / "adaptive-0.01_CartPole-v1_seed0_512.csv").read_text().splitlines()
    assert beta_trace[0] == "timesteps,beta,kl" and len(beta_trace) > 3
    assert read_rows(csv_path)[0]["timesteps"] == 512


def _row(setting, env, score):
    return {"setting": setting, "env_id": env, "final_score": score}


def test_normalization_is_the_papers():
    rows = [
        _row("random", "A", 0.0),
        _row("random", "A", 20.0),  # random = 10
        _row("clip-0.2", "A", 110.0),
        _row("clip-0.2", "A", 90.0),  # best = 100
        _row("adaptive-0.01", "A", 55.0),  # (55 - 10) / 90 = 0.5
        _row("random", "B", -100.0),
        _row("clip-0.2", "B", -50.0),  # 1 (alone, best)
        _row("adaptive-0.01", "B", -150.0),  # (-150 + 100) / 50 = -1
    ]
    normalized = normalized_scores(rows)
    assert normalized["clip-0.2"] == (pytest.approx((10 / 9 + 8 / 9 + 1) / 3), 3)
    assert normalized["adaptive-0.01"] == (pytest.approx((0.5 - 1) / 2), 2)
    assert "random" not in normalized


def test_only_envs_with_every_setting_are_normalized():
    rows = [_row("random", "A", 0.0), _row("clip-0.2", "A", 1.0), _row("none", "A", 2.0)]
    rows += [_row("random", "B", 0.0), _row("clip-0.2", "B", 1.0)]  # "none" is still missing on B
    assert complete_envs(rows, ["random", "clip-0.2", "none"]) == ["A"]


def test_rank_correlation():
    assert rank_correlation([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert rank_correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # Ties share their mean rank: ranks (1.5, 1.5, 3) against (1, 2, 3)
    assert rank_correlation([5.0, 5.0, 9.0], [1.0, 2.0, 3.0]) == pytest.approx(0.8660254)
    assert math.isnan(rank_correlation([1.0, 1.0], [1.0, 2.0]))


def test_within_noise_is_a_95_percent_t_test():
    # Welch: means 10 and 13, sample variances 1 and 4, standard error sqrt(1/3 + 4/3) = 1.29, 2.94 degrees of
    # freedom (t quantile 4.303 for 2): beyond noise only past 5.56
    difference, noise = within_noise([9.0, 10.0, 11.0], [11.0, 13.0, 15.0])
    assert difference == pytest.approx(-3.0) and noise
    assert within_noise([9.0, 10.0, 11.0], [16.0, 18.0, 20.0]) == (pytest.approx(-8.0), False)
    # Against a published figure: standard error 1 / sqrt(3), 2 degrees of freedom: limit 4.303 x 0.577 = 2.48
    assert within_noise([9.0, 10.0, 11.0], 12.4)[1] and not within_noise([9.0, 10.0, 11.0], 12.6)[1]
    # One seed says nothing about the noise; no variance at all: any difference is real
    assert within_noise([9.0], 100.0) == (pytest.approx(-91.0), None)
    assert within_noise([500.0, 500.0], [500.0, 500.0]) == (0.0, True)
    assert within_noise([500.0, 500.0], [499.0, 499.0]) == (1.0, False)


def _append_scores(csv_path, timesteps, scores):
    """Harness rows (one per seed) with the given final scores: ``{(setting, env): [score per seed]}``"""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    for (setting, env), values in scores.items():
        for seed, value in enumerate(values):
            row = dict.fromkeys(CSV_FIELDS, "")
            row.update(setting=setting, env_id=env, seed=seed, timesteps=timesteps, final_score=value)
            row.update(run_id=f"{setting}|{env}|seed{seed}|{timesteps}", eval_return=value, wall_time_s=1, steps_per_s=1)
            append_row(csv_path, row)


def test_headline_report_sets_the_long_budget_beside_the_sweep(tmp_path):
    _append_scores(tmp_path / "paper" / "runs.csv", 200, {("clip-0.2", "A"): [40.0, 60.0], ("none", "A"): [5.0]})
    _append_scores(
        tmp_path / "paper-1m" / "runs.csv",
        1000,
        {
            ("random", "A"): [0.0, 20.0],  # random = 10
            ("clip-0.2", "A"): [100.0, 120.0],  # best = 110
            ("none", "A"): [60.0],  # (60 - 10) / 100 = 0.5
            ("random", "B"): [0.0],
            ("clip-0.2", "B"): [50.0],  # B lacks "none": shown, not normalized
        },
    )
    markdown = write_report(tmp_path, tmp_path / "docs").read_text()
    headline = markdown.split("## Suite 1 at the paper's budget")[1].split("## Suite 2")[0]
    assert "| A | clip-0.2 | 50.0 ± 10.0 (n=2) | 110.0 ± 10.0 (n=2) |" in headline
    assert "| A | none | 5.0 ± 0.0 (n=1) | 60.0 ± 0.0 (n=1) |" in headline
    assert "| B | clip-0.2 | n/a | 50.0 ± 0.0 (n=1) |" in headline
    assert "| clip-0.2 | 1.00 | 2 | 0.82 |" in headline and "| none | 0.50 | 1 | -0.39 |" in headline
    assert "envs: A)" in headline
    # These rows have no learning curves: no plot rather than an empty one
    assert "![" not in headline and not list((tmp_path / "docs" / "img").glob("paper*.png"))


def test_headline_report_with_only_random_runs_says_so(tmp_path):
    _append_scores(tmp_path / "paper-1m" / "runs.csv", 1000, {("random", "A"): [0.0, 20.0]})
    headline = headline_section(read_rows(tmp_path / "paper-1m" / "runs.csv"), tmp_path / "paper-1m", tmp_path)
    assert "Runs: 2 (1,000 steps), the random policy only so far, on A." in headline


def test_share_of_updates_within_the_kl_band(tmp_path):
    (tmp_path / "beta").mkdir()
    trace = "timesteps,beta,kl\n2048,1.0,0.01\n4096,1.0,0.0149\n6144,0.5,0.02\n8192,1.0,0.006\n"
    (tmp_path / "beta" / "adaptive-0.01_A_seed0_8192.csv").write_text(trace)
    rows = [{"setting": "adaptive-0.01", "run_id": "adaptive-0.01|A|seed0|8192", "seed": 0, "env_id": "A"}]
    rows.append({"setting": "clip-0.2", "run_id": "clip-0.2|A|seed0|8192", "seed": 0, "env_id": "A"})
    # 0.01 and 0.0149 are inside [0.00667, 0.015]; 0.02 and 0.006 outside
    assert kl_within_tolerance(tmp_path, rows) == {"adaptive-0.01": 0.5}


def test_beta_plot_prefers_the_listed_envs_in_their_order():
    assert beta_plot_env({"HalfCheetah-v5", "Hopper-v5", "Reacher-v5"}) == "Hopper-v5"
    assert beta_plot_env({"Walker2d-v5", "HalfCheetah-v5"}) == "HalfCheetah-v5"
    assert beta_plot_env({"Reacher-v5", "CartPole-v1"}) == "CartPole-v1"


def test_curve_label_counts_seeds_in_singular_and_plural():
    assert curve_label("clip 0.2", 1) == "clip 0.2 (1 seed)"
    assert curve_label("clip 0.2", 3) == "clip 0.2 (3 seeds)"


def test_speed_comparison_table_and_profile(tmp_path, capsys, monkeypatch):
    output = tmp_path / "speed" / "1-cartpole.md"
    arguments = ["--task", "cartpole", "--warmup", "256", "--timesteps", "512", "--repeats", "2", "--algos", "PPOClip"]
    speed_main([*arguments, "--output", str(output)])
    table = output.read_text()
    assert table.startswith("### cartpole: CartPole-v1") and "--timesteps 512" in table
    assert "a first learn() of 256 steps, then 512 more steps (steady state)" in table
    rows = rows_of(table)
    assert list(rows) == ["algorithm", "SB3 PPO", "PPOClip"]
    assert rows["SB3 PPO"][2].startswith("1.00x (1.00-1.00)") and rows["SB3 PPO"][4] == "0.0"
    assert float(rows["PPOClip"][1]) > 0
    assert rows["PPOClip"][5] == "never" or rows["PPOClip"][5].replace(",", "").isdigit()  # the break-even budget
    assert "equal SB3 PPO's (torch.equal) in 2/2 repeats" in table
    end_to_end_output = tmp_path / "speed" / "2-cartpole-end-to-end.md"
    end_to_end_arguments = ["--task", "cartpole", "--warmup", "256", "--timesteps", "0", "--repeats", "1"]
    speed_main([*end_to_end_arguments, "--algos", "PPOPenalty", "--output", str(end_to_end_output)])
    end_to_end = rows_of(end_to_end_output.read_text())
    assert end_to_end["SB3 PPO"][2] == "1.00x (1.00-1.00)" and float(end_to_end["PPOPenalty"][1]) > 0
    warm_output = tmp_path / "speed" / "3-cartpole-warm.md"
    caches: list[Path] = []

    def warm_cache(prefix: str) -> str:
        caches.append(Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_path)))
        return str(caches[-1])

    monkeypatch.setattr(speed, "tempfile", SimpleNamespace(mkdtemp=warm_cache))
    speed_main([*end_to_end_arguments, "--algos", "PPOClip fast_mode", "--warm-cache", "--output", str(warm_output)])
    # One cache for the algorithm that compiles, filled with compiled kernels by the untimed run
    assert len(caches) == 1 and any(caches[0].glob("*/*.so"))
    warm_text = warm_output.read_text()
    assert "warm compilation cache" in warm_text.splitlines()[0] and "filled by an untimed run" in warm_text
    warm = rows_of(warm_text)
    assert float(warm["PPOClip fast_mode"][1]) > 0
    profile_output = tmp_path / "speed" / "profile.md"
    speed_main(["--task", "cnn", "--timesteps", "256", "--profile", "--algos", "PPOPenalty", "--output", str(profile_output)])
    profile = capsys.readouterr().out
    assert "| learn (total) | " in profile and "|   backward | " in profile and "| SB3 PPO | PPOPenalty |" in profile
    assert profile_output.read_text().startswith("### Where the time goes: cnn")
    memory_output = tmp_path / "speed" / "memory.md"
    speed_main(
        [
            *("--task", "cartpole", "--timesteps", "256", "--memory", "--repeats", "2", "--algos", "PPOPenalty"),
            *("--output", str(memory_output)),
        ]
    )
    memory_text = memory_output.read_text()
    assert "2 runs per algorithm" in memory_text
    memory = rows_of(memory_text)
    assert memory["SB3 PPO"][2] == "1.00" and memory["SB3 PPO"][4] in ("1.00", "n/a")
    median, low, high = (float(value) for value in re.fullmatch(r"(\d+) \((\d+)-(\d+)\)", memory["PPOPenalty"][1]).groups())
    assert 100 < low <= median <= high  # MiB: a process with torch and a model
    assert capsys.readouterr().out.count("PPOPenalty: ") == 2  # one line per run
    # The summary takes the comparisons, not the profiles nor the memory tables
    summary = speed_summary(tmp_path).splitlines()
    assert len(summary) == 5
    steady = read_speed_table(output)
    assert steady.title == "CartPole-v1, zoo_configs/ppo_clip.yml, 8 envs" and steady.identical == "2/2" and steady.steady
    assert steady.rows["PPOClip"]["steady"] == rows["PPOClip"][2] and steady.steps == 256
    no_fast_mode = "n/a / n/a | n/a / n/a | n/a / n/a (from the steady state)"
    assert summary[2] == f"| {steady.title} | {rows['PPOClip'][2]} | 2/2 | n/a | n/a | n/a | {no_fast_mode} |"
    measured = read_speed_table(end_to_end_output)
    assert not measured.steady and measured.rows["PPOPenalty"]["end_to_end"] == end_to_end["PPOPenalty"][2]
    assert summary[3].startswith(f"| {measured.title}; 256 steps end to end | n/a | n/a | {end_to_end['PPOPenalty'][2]} |")


def rows_of(table: str) -> dict[str, list[str]]:
    """:return: The cells of a Markdown table's rows, by their first cell"""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]
    return {cells[0]: cells for cells in rows}


def test_readme_speed_summary_is_the_committed_results():
    """The README's ratios are those of benchmarks/results/speed/ (python -m benchmarks.report writes them)."""
    readme = (REPOSITORY / "README.md").read_text()
    block = readme.split(README_SPEED_BEGIN + "\n")[1].split(README_SPEED_END)[0]
    assert block == speed_summary(REPOSITORY / "benchmarks" / "results")
    assert block.count("\n") >= 6  # header, separator and the four tasks


def _write_validation(results: Path, env_id: str, returns: dict[str, list[float]], steps: int = 1000) -> None:
    folder = results / "validation" / env_id
    folder.mkdir(parents=True)
    lines = ["env_id,candidate,algo,steps,tuning_value,seed,final_return"]
    for name, values in returns.items():
        algo, tuning = ("ppo", "") if name == "sb3-ppo" else ("ppo_penalty", "" if name == "current" else "9.5")
        lines += [f"{env_id},{name},{algo},{steps},{tuning},{1000 + i},{value}" for i, value in enumerate(values)]
    (folder / "validation.csv").write_text("\n".join(lines) + "\n")


def test_validation_summary_says_whether_the_supported_entry_reaches_sb3_ppo(tmp_path):
    _write_validation(tmp_path, "Pendulum-v1", {"current": [-200.0, -210.0, -190.0], "sb3-ppo": [-150.0, -160.0, -155.0]})
    _write_validation(
        tmp_path,
        "CartPole-v1",
        {"current": [400.0, 420.0, 410.0], "trial-4": [500.0, 480.0, 490.0], "sb3-ppo": [495.0, 500.0, 470.0]},
        steps=100_000,
    )
    _write_validation(tmp_path, "Acrobot-v1", {"current": [-80.0, -70.0, -95.0], "sb3-ppo": [-75.0, -85.0, -70.0]})
    # One run not done (an empty cell), and SB3 PPO's with a single run: too few to test
    _write_validation(tmp_path, "LunarLander-v3", {"current": [100.0, "", 120.0], "sb3-ppo": [200.0, "", ""]})
    # Without SB3 PPO's entry
    _write_validation(tmp_path, "Zoo-v0", {"current": [1.0, 2.0, 3.0]})
    table = validation_summary(tmp_path)
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    # The zoo's order of envs; the supported entry of each, and how it compares with SB3 PPO's
    assert [row[:2] for row in cells] == [
        ["CartPole-v1", "current"],
        ["CartPole-v1", "trial-4"],
        ["CartPole-v1", "sb3-ppo"],
        ["Acrobot-v1", "current"],
        ["Acrobot-v1", "sb3-ppo"],
        ["Pendulum-v1", "current"],
        ["Pendulum-v1", "sb3-ppo"],
        ["LunarLander-v3", "current"],
        ["LunarLander-v3", "sb3-ppo"],
        ["Zoo-v0", "current"],
    ]
    supported = {row[0]: (row[1], row[-1]) for row in cells if row[-2] == "**supported**"}
    assert supported == {
        "CartPole-v1": ("trial-4", "yes"),
        "Acrobot-v1": ("current", "below, within noise"),
        "Pendulum-v1": ("current", "no: below beyond noise"),
        "LunarLander-v3": ("current", "below; too few runs to tell"),
        "Zoo-v0": ("current", "n/a"),
    }
    assert cells[1][2:5] == ["100,000", "3 (1000-1002)", "490.0 ± 24.8"]
    assert cells[7][3:6] == ["2 (1000-1002)", "110.0 ± 127.1", "n/a"]
    assert validation_summary(tmp_path / "none") == "No validation is committed yet.\n"


def test_tuning_guides_validation_summary_is_the_committed_results():
    """docs/tuning.md's validation table is that of benchmarks/results/validation/ (python -m benchmarks.report)."""
    guide = (REPOSITORY / "docs" / "tuning.md").read_text()
    block = guide.split(VALIDATION_BEGIN + "\n")[1].split(VALIDATION_END)[0]
    assert block == validation_summary(REPOSITORY / "benchmarks" / "results")
