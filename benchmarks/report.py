"""
Tables and plots from the harness's CSVs, written to ``docs/benchmarks.md`` and ``docs/img/``.

    python -m benchmarks.report [--results benchmarks/results] [--docs docs]
"""

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import HEADLINE_SETTINGS, PAPER_ENVS, PAPER_SETTINGS, RESULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
# Schulman et al. 2017, Table 1: normalized scores averaged over the seven MuJoCo tasks (1M steps, 3 seeds)
PAPER_NORMALIZED = {
    "none": -0.39,
    "clip-0.1": 0.76,
    "clip-0.2": 0.82,
    "clip-0.3": 0.70,
    "adaptive-0.003": 0.68,
    "adaptive-0.01": 0.74,
    "adaptive-0.03": 0.71,
    "fixed-0.3": 0.62,
    "fixed-1": 0.71,
    "fixed-3": 0.72,
    "fixed-10": 0.69,
}
# Fewer complete envs than this rank the settings by the noise of single tasks: no rank correlation is printed
MIN_ENVS_FOR_RANKING = 3
# rl-zoo's published PPO results (mean evaluation return)
ZOO_PUBLISHED_PPO = {
    "CartPole-v1": 500.0,
    "Acrobot-v1": -73.5,
    "Pendulum-v1": -172.0,
    "LunarLander-v3": 242.0,
    "LunarLanderContinuous-v3": 271.0,
    "Hopper-v5": 2410.0,
    "HalfCheetah-v5": 5819.0,
}


def read_rows(csv_path: Path) -> list[dict[str, Any]]:
    """:return: The rows of a harness CSV, numbers parsed"""
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for key in ("final_score", "eval_return", "wall_time_s", "steps_per_s"):
            row[key] = float(row[key])
        row["seed"], row["timesteps"] = int(row["seed"]), int(row["timesteps"])
    return rows


def scores_by(rows: list[dict[str, Any]], key: str = "final_score") -> dict[tuple[str, str], list[float]]:
    """:return: ``{(setting, env_id): [score per seed]}``"""
    grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        grouped[(row["setting"], row["env_id"])].append(row[key])
    return grouped


def normalized_scores(rows: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """
    The paper's normalization: per env, the random policy scores 0 and the best setting (by mean over seeds) 1;
    each setting's normalized scores are averaged over envs and seeds.

    :param rows: Rows of the paper suite, random-policy rows included
    :return: ``{setting: (mean normalized score, number of runs averaged)}``, for envs with a random baseline
    """
    grouped = scores_by(rows)
    envs = {env for setting, env in grouped if setting == "random"}
    normalized: dict[str, list[float]] = defaultdict(list)
    for env in sorted(envs):
        random_score = float(np.mean(grouped[("random", env)]))
        setting_means = {s: float(np.mean(v)) for (s, e), v in grouped.items() if e == env and s != "random"}
        if not setting_means:
            continue
        best = max(setting_means.values())
        if math.isclose(best, random_score):
            continue
        for (setting, row_env), values in grouped.items():
            if row_env == env and setting != "random":
                normalized[setting] += [(value - random_score) / (best - random_score) for value in values]
    return {setting: (float(np.mean(values)), len(values)) for setting, values in normalized.items()}


def complete_envs(rows: list[dict[str, Any]], settings: list[str]) -> list[str]:
    """:return: The envs that have at least one run of every setting in ``settings``"""
    grouped = scores_by(rows)
    return sorted({env for _, env in grouped if all((setting, env) in grouped for setting in settings)})


def rank_correlation(first: list[float], second: list[float]) -> float:
    """:return: Spearman's rank correlation of two equally long lists (ties get their mean rank)"""

    def ranks(values: list[float]) -> np.ndarray:
        array = np.asarray(values, dtype=float)
        result = np.empty(len(array))
        for value in np.unique(array):
            positions = np.flatnonzero(array == value)
            # ranks of the values below, plus the mean rank of the tied ones
            result[positions] = np.sum(array < value) + (len(positions) + 1) / 2
        return result

    first_ranks, second_ranks = ranks(first), ranks(second)
    if first_ranks.std() == 0 or second_ranks.std() == 0:
        return float("nan")
    return float(np.corrcoef(first_ranks, second_ranks)[0, 1])


# Two-sided 95% quantiles of Student's t distribution for 1..30 degrees of freedom (beyond: the normal's 1.96)
T_QUANTILES_95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_95(degrees_of_freedom: float) -> float:
    """:return: The two-sided 95% quantile of Student's t, for the largest whole degrees of freedom not above it"""
    whole = max(math.floor(degrees_of_freedom), 1)
    return T_QUANTILES_95[whole - 1] if whole <= len(T_QUANTILES_95) else 1.96


def within_noise(values: list[float], reference: list[float] | float) -> tuple[float, bool | None]:
    """
    Whether a difference of means is within seed noise: Welch's t-test at the 95% level against the other
    algorithm's seeds, or a one-sample t-test against a published figure.

    :param values: Scores per seed
    :param reference: Scores per seed of the algorithm to compare with, or a single published figure
    :return: (difference of the means, whether it is within the noise; None with a single seed: no estimate of it)
    """
    difference = float(np.mean(values)) - float(np.mean(reference))
    groups = [values, reference] if isinstance(reference, list) else [values]
    if any(len(group) < 2 for group in groups):
        return difference, None
    squared_errors = [float(np.var(group, ddof=1)) / len(group) for group in groups]
    standard_error = math.sqrt(sum(squared_errors))
    if standard_error == 0.0:
        return difference, difference == 0.0
    # Welch-Satterthwaite degrees of freedom (n - 1 for one group)
    degrees_of_freedom = sum(squared_errors) ** 2 / sum(
        error**2 / (len(group) - 1) for error, group in zip(squared_errors, groups, strict=True)
    )
    return difference, abs(difference) <= t_quantile_95(degrees_of_freedom) * standard_error


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f} (n={len(values)})"


def score_table(rows: list[dict[str, Any]], settings: list[str], key: str = "final_score") -> str:
    """:return: A Markdown table, envs as rows, settings as columns, mean ± std over seeds"""
    grouped = scores_by(rows, key)
    envs = sorted({env for _, env in grouped})
    columns = [setting for setting in settings if any((setting, env) in grouped for env in envs)]
    lines = ["| env | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for env in envs:
        cells = [_mean_std(grouped[(setting, env)]) if (setting, env) in grouped else "n/a" for setting in columns]
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curves(monitor_folder: Path, run_ids: list[str], grid: np.ndarray) -> np.ndarray | None:
    """Episode returns of each run, as a function of timesteps, interpolated onto ``grid`` (one row per run)."""
    from stable_baselines3.common.monitor import load_results

    curves = []
    for run_id in run_ids:
        folder = monitor_folder / run_id.replace("|", "_")
        if not folder.is_dir():
            continue
        data = load_results(str(folder)).sort_values("t")
        if len(data) < 2:
            continue
        timesteps = np.cumsum(data["l"].to_numpy())
        # Trailing mean over 10 episodes (no padding: the first points are means over fewer episodes)
        smoothed = data["r"].rolling(10, min_periods=1).mean().to_numpy()
        curves.append(np.interp(grid, timesteps, smoothed))
    return np.array(curves) if curves else None


def curve_label(setting: str, n_seeds: int) -> str:
    """:return: The legend entry of a setting's learning curve, with its number of seeds"""
    return f"{setting} ({n_seeds} seed{'' if n_seeds == 1 else 's'})"


def plot_learning_curves(
    rows: list[dict[str, Any]], suite_folder: Path, settings: list[str], image_folder: Path, prefix: str
) -> list[Path]:
    """One PNG per env with monitor logs: mean ± std over seeds of the (smoothed) training episode return, one line
    per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image_folder.mkdir(parents=True, exist_ok=True)
    written = []
    for env in sorted({row["env_id"] for row in rows}):
        figure, axes = plt.subplots(figsize=(7, 4))
        for setting in settings:
            env_rows = [row for row in rows if row["env_id"] == env and row["setting"] == setting]
            if not env_rows:
                continue
            grid = np.linspace(0, max(row["timesteps"] for row in env_rows), 200)
            curves = _curves(suite_folder / "monitor", [row["run_id"] for row in env_rows], grid)
            if curves is None:
                continue
            mean, std = curves.mean(axis=0), curves.std(axis=0)
            axes.plot(grid, mean, label=curve_label(setting, len(curves)))
            axes.fill_between(grid, mean - std, mean + std, alpha=0.2)
        if not axes.get_legend_handles_labels()[0]:
            plt.close(figure)  # no monitor log for this env: no empty plot
            continue
        axes.set_title(env)
        axes.set_xlabel("timesteps")
        axes.set_ylabel("training episode return")
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = image_folder / f"{prefix}_{env}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


# Envs whose beta traces are plotted, in order of preference: the paper's harder tasks, not those that saturate
BETA_PLOT_ENVS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Swimmer-v5")


def _beta_traces(suite_folder: Path, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Path]]:
    """:return: The adaptive-beta runs with their beta/KL trace file (``timesteps,beta,kl`` per update)"""
    adaptive = sorted((row for row in rows if row["setting"].startswith("adaptive")), key=lambda row: row["seed"])
    traces = [(row, suite_folder / "beta" / f"{row['run_id'].replace('|', '_')}.csv") for row in adaptive]
    return [(row, path) for row, path in traces if path.exists()]


def _read_trace(path: Path) -> np.ndarray | None:
    """:return: A beta/KL trace as rows of (timesteps, beta, kl), or None if it holds no update"""
    data = np.atleast_2d(np.loadtxt(path, delimiter=",", skiprows=1))
    return data if data.size > 0 and data.shape[1] == 3 else None


def _kl_target(row: dict[str, Any]) -> float:
    """:return: The kl_target of an adaptive setting (``adaptive-<kl_target>``)"""
    return float(row["setting"].split("-")[1])


def kl_within_tolerance(suite_folder: Path, rows: list[dict[str, Any]], kl_tolerance: float = 1.5) -> dict[str, float]:
    """
    :return: Per adaptive setting, the share of updates whose measured KL fell within
        ``[kl_target / kl_tolerance, kl_target * kl_tolerance]`` (the band where beta is kept)
    """
    inside: dict[str, list[bool]] = defaultdict(list)
    for row, path in _beta_traces(suite_folder, rows):
        data = _read_trace(path)
        if data is None:
            continue
        target = _kl_target(row)
        inside[row["setting"]] += list((data[:, 2] >= target / kl_tolerance) & (data[:, 2] <= target * kl_tolerance))
    return {setting: float(np.mean(values)) for setting, values in sorted(inside.items())}


def beta_plot_env(envs: set[str]) -> str:
    """:return: The env whose beta traces are plotted: the first of ``BETA_PLOT_ENVS`` present, else the first by name"""
    return min(envs, key=lambda env: (BETA_PLOT_ENVS.index(env) if env in BETA_PLOT_ENVS else len(BETA_PLOT_ENVS), env))


def plot_beta(
    suite_folder: Path, rows: list[dict[str, Any]], image_folder: Path, prefix: str, max_runs: int = 4
) -> Path | None:
    """beta and the measured KL against the target over training, for a few adaptive runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = [(row, path) for row, path in _beta_traces(suite_folder, rows) if row["seed"] == rows[0]["seed"]]
    if not traces:
        return None
    # One seed of each kl_target on one env
    env = beta_plot_env({row["env_id"] for row, _ in traces})
    traces = [(row, path) for row, path in traces if row["env_id"] == env][:max_runs]
    figure, (beta_axes, kl_axes) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for row, path in traces:
        data = _read_trace(path)
        if data is None:
            continue
        label = f"{row['setting']} {row['env_id']} seed {row['seed']}"
        beta_axes.semilogy(data[:, 0], data[:, 1], label=label)
        line = kl_axes.semilogy(data[:, 0], np.maximum(data[:, 2], 1e-8), label=label)[0]
        kl_axes.axhline(_kl_target(row), color=line.get_color(), linestyle="--", linewidth=0.8)
    beta_axes.set_ylabel("beta")
    kl_axes.set_ylabel("mean KL per update (dashed: kl_target)")
    kl_axes.set_xlabel("timesteps")
    beta_axes.legend(fontsize=7)
    figure.tight_layout()
    image_folder.mkdir(parents=True, exist_ok=True)
    path = image_folder / f"{prefix}_beta_and_kl.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _plot_lines(rows: list[dict[str, Any]], suite_folder: Path, settings: list[str], image_folder: Path) -> list[str]:
    """:return: Markdown lines of a paper suite's plots (learning curves of ``settings``, and beta if it has traces)"""
    images = plot_learning_curves(rows, suite_folder, settings, image_folder, suite_folder.name)
    beta_image = plot_beta(suite_folder, rows, image_folder, suite_folder.name)
    lines = ["", *[f"![{path.stem}](img/{path.name})" for path in images]]
    if beta_image is not None:
        lines += ["", "beta and the measured KL per update, against kl_target:", "", f"![beta](img/{beta_image.name})"]
    return lines


def _budgets(rows: list[dict[str, Any]]) -> str:
    """:return: The runs' budgets, e.g. ``200,000`` (``n/a`` without rows)"""
    return ", ".join(f"{budget:,}" for budget in sorted({row["timesteps"] for row in rows})) or "n/a"


def paper_section(rows: list[dict[str, Any]], suite_folder: Path, image_folder: Path) -> str:
    """:return: The Markdown of a paper suite: scores, normalized scores next to the paper's, curves, beta"""
    if not rows:
        return "No run of this suite yet.\n"
    settings = ["random", *PAPER_SETTINGS]
    envs = sorted({row["env_id"] for row in rows})
    # The best setting of an env scores 1 by definition: an env without all the suite's settings would be normalized
    # by another best, so only complete envs are normalized
    complete = complete_envs(rows, sorted({row["setting"] for row in rows}))
    normalized = normalized_scores([row for row in rows if row["env_id"] in complete])
    lines = [
        f"Runs: {len(rows)} (budgets: {_budgets(rows)} steps), seeds per cell in parentheses. "
        f"Envs covered so far: {', '.join(envs)} ({len(envs)} of the paper's {len(PAPER_ENVS)}); averages over fewer "
        "envs or settings than the paper's are not comparable with its numbers.\n",
        "Final score (mean return of the last 100 training episodes):\n",
        score_table(rows, settings),
        "\nNormalized score (random policy = 0, best setting per env = 1; averaged over envs and seeds), next to "
        f"the paper's Table 1 (1M steps, all seven tasks). Envs normalized: {', '.join(complete) or 'none yet'} (those "
        "with runs of every setting).\n",
        "| setting | ours | runs averaged | paper |",
        "|---|---|---|---|",
    ]
    for setting in PAPER_SETTINGS:
        ours = f"{normalized[setting][0]:.2f}" if setting in normalized else "n/a"
        count = normalized[setting][1] if setting in normalized else 0
        lines.append(f"| {setting} | {ours} | {count} | {PAPER_NORMALIZED[setting]:.2f} |")
    compared = [setting for setting in PAPER_SETTINGS if setting in normalized]
    if len(complete) >= MIN_ENVS_FOR_RANKING and len(compared) > 2:
        our_scores = [normalized[setting][0] for setting in compared]
        correlation = rank_correlation(our_scores, [PAPER_NORMALIZED[setting] for setting in compared])
        rounded = [round(score, 2) for score in our_scores]
        ties = sum(rounded.count(score) > 1 for score in rounded)
        lines.append(
            f"\nRank agreement with the paper over these {len(compared)} settings and {len(complete)} envs: Spearman's "
            f"rho = {correlation:.2f} (1: same order, 0: unrelated; {ties} settings share their score with another at "
            "2 decimals)."
        )
    else:
        lines.append(
            f"\nNo rank agreement with the paper computed: it needs at least {MIN_ENVS_FOR_RANKING} envs with every "
            f"setting ({len(complete)} so far); a single env, and a saturated one most of all, ranks settings by noise."
        )
    beta_bounds = [int(row["beta_at_bounds"]) for row in rows if row.get("beta_at_bounds") not in ("", None)]
    lines.append(
        f"\nUpdates that ended with beta at a bound (1e-4 or 1e4): {sum(beta_bounds)} over {len(beta_bounds)} PPOPenalty runs."
    )
    within = kl_within_tolerance(suite_folder, rows)
    if within:
        shares = ", ".join(f"{setting} {share:.0%}" for setting, share in within.items())
        lines.append(
            "\nShare of updates whose measured KL fell within [kl_target / 1.5, 1.5 kl_target], where beta is kept "
            f"(all envs and seeds): {shares}. Outside it, beta is halved or doubled."
        )
    lines += _plot_lines(rows, suite_folder, [*HEADLINE_SETTINGS], image_folder)
    return "\n".join(lines) + "\n"


def budget_table(short_rows: list[dict[str, Any]], long_rows: list[dict[str, Any]], settings: list[str]) -> str:
    """:return: Per env of the long runs, each setting's final score at the short and at the long budget side by side"""
    short, long = scores_by(short_rows), scores_by(long_rows)
    lines = [
        f"| env | setting | final score at {_budgets(short_rows)} steps | at {_budgets(long_rows)} steps |",
        "|---|---|---|---|",
    ]
    for env in sorted({env for _, env in long}):
        for setting in settings:
            if (setting, env) not in long:
                continue
            before = _mean_std(short[(setting, env)]) if (setting, env) in short else "n/a"
            lines.append(f"| {env} | {setting} | {before} | {_mean_std(long[(setting, env)])} |")
    return "\n".join(lines)


def _what_ran(settings: list[str]) -> str:
    """:return: The settings that have runs, in words (the harness runs the random policy first)"""
    return f"settings {', '.join(settings)} and the random policy" if settings else "the random policy only so far"


def headline_section(rows: list[dict[str, Any]], suite_folder: Path, image_folder: Path) -> str:
    """
    :return: The Markdown of the headline suite (few settings at the paper's budget): scores, the same settings at
        the sweep's shorter budget (``results/paper``), and their order against the paper's
    """
    if not rows:
        return "No run of this suite yet.\n"
    settings = [setting for setting in HEADLINE_SETTINGS if any(row["setting"] == setting for row in rows)]
    envs = sorted({row["env_id"] for row in rows})
    complete = complete_envs(rows, ["random", *settings])
    normalized = normalized_scores([row for row in rows if row["env_id"] in complete])
    sweep_rows = [row for row in read_rows(suite_folder.parent / "paper" / "runs.csv") if row["env_id"] in envs]
    lines = [
        f"Runs: {len(rows)} ({_budgets(rows)} steps), {_what_ran(settings)}, on {', '.join(envs)}.\n",
        "Final score (mean return of the last 100 training episodes):\n",
        score_table(rows, ["random", *settings]),
        "\nThe same settings at the sweep's budget (suite 1 above) and at this one:\n",
        budget_table([row for row in sweep_rows if row["setting"] in settings], rows, settings),
        f"\nNormalized among these {len(settings)} settings (random policy = 0, the best of them per env = 1; envs: "
        f"{', '.join(complete) or 'none complete yet'}). The paper normalizes by the best of all 11 settings over 7 "
        "tasks, so only the order of the two columns is comparable:\n",
        "| setting | ours | runs averaged | paper (Table 1) |",
        "|---|---|---|---|",
    ]
    for setting in settings:
        ours, count = normalized.get(setting, (math.nan, 0))
        lines.append(f"| {setting} | {'n/a' if count == 0 else f'{ours:.2f}'} | {count} | {PAPER_NORMALIZED[setting]:.2f} |")
    lines += _plot_lines(rows, suite_folder, settings, image_folder)
    return "\n".join(lines) + "\n"


def noise_table(rows: list[dict[str, Any]], algos: list[str]) -> str:
    """:return: Per env and algorithm, the evaluation return's difference to SB3 PPO and to rl-zoo's figure"""
    grouped = scores_by(rows, "eval_return")
    lines = [
        "Differences of the evaluation return, and whether each is within seed noise (Welch's t-test at the 95% "
        "level, a one-sample t-test against rl-zoo's figure; with 3 seeds only large gaps are beyond noise, and 1 in "
        "20 equal pairs is flagged by chance):\n",
        "| env | algorithm | vs SB3 PPO | vs rl-zoo's PPO figure |",
        "|---|---|---|---|",
    ]
    for env in sorted({env for _, env in grouped}):
        for algo in algos:
            values = grouped.get((algo, env))
            if not values:
                continue
            cells = []
            for reference in (grouped.get(("sb3_ppo", env)), ZOO_PUBLISHED_PPO.get(env)):
                if reference is None or (algo == "sb3_ppo" and isinstance(reference, list)):
                    cells.append("n/a")
                    continue
                difference, noise = within_noise(values, reference)
                verdict = "n/a: 1 seed" if noise is None else "within noise" if noise else "beyond noise"
                cells.append(f"{difference:+.1f} ({verdict})")
            lines.append(f"| {env} | {algo} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def zoo_section(rows: list[dict[str, Any]], suite_folder: Path, image_folder: Path) -> str:
    """:return: The Markdown of the side-by-side suite: evaluation and final scores, curves"""
    if not rows:
        return "No run of this suite yet.\n"
    algos = ["ppo_penalty", "ppo_clip", "sb3_ppo", "trpo"]
    lines = [
        "Deterministic evaluation return (10 episodes at the end of training), mean ± std over seeds:\n",
        score_table(rows, algos, key="eval_return"),
        "\nFinal score (last 100 training episodes):\n",
        score_table(rows, algos),
        "\nrl-zoo's published PPO results: " + ", ".join(f"{env} {value:g}" for env, value in ZOO_PUBLISHED_PPO.items()),
        "",
        noise_table(rows, algos),
    ]
    images = plot_learning_curves(rows, suite_folder, algos, image_folder, suite_folder.name)
    lines += ["", *[f"![{path.stem}](img/{path.name})" for path in images]]
    return "\n".join(lines) + "\n"


def write_report(results: Path = RESULTS, docs: Path = DOCS) -> Path:
    """
    :param results: The harness's results folder
    :param docs: The docs folder (``benchmarks.md`` and ``img/`` are written there)
    :return: The Markdown file
    """
    image_folder = docs / "img"
    sections = [
        "# Benchmarks\n",
        (Path(__file__).parent / "README.md").read_text() if (Path(__file__).parent / "README.md").exists() else "",
    ]
    for suite, title, make_section in (
        ("paper", "Suite 1: the PPO paper's comparison of objectives (MuJoCo, 200k steps)", paper_section),
        ("paper-1m", "Suite 1 at the paper's budget: headline settings, 1M steps", headline_section),
        ("zoo", "Suite 2: side by side with SB3 PPO and sb3-contrib TRPO", zoo_section),
        ("tiny", "Tiny suite (harness self-test)", paper_section),
    ):
        rows = read_rows(results / suite / "runs.csv")
        if suite == "tiny" and not rows:
            continue
        sections += [f"## {title}\n", make_section(rows, results / suite, image_folder)]
        # What the numbers mean, written by a person from the results of this commit (results/<suite>/discussion.md)
        discussion = results / suite / "discussion.md"
        if rows and discussion.exists():
            sections.append(discussion.read_text())
    # The narrative (results/speed.md), then the tables that benchmarks/speed.py --output wrote (results/speed/)
    speed = results / "speed.md"
    if speed.exists():
        sections += ["## Speed\n", speed.read_text()]
        sections += [table.read_text() for table in sorted((results / "speed").glob("*.md"))]
    path = docs / "benchmarks.md"
    docs.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sections))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write docs/benchmarks.md from the harness's results.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    print(f"Wrote {write_report(args.results, args.docs)}")


if __name__ == "__main__":
    main()
