import math

from sb3_ppo_variants.quickstart import main


def test_quickstart_trains_and_evaluates(tmp_path, capsys):
    mean_return = main(["--timesteps", "2048", "--eval-episodes", "2", "--no-progress-bar", "--save", str(tmp_path / "m")])
    assert math.isfinite(mean_return) and mean_return >= 8  # a CartPole episode lasts at least ~8 steps
    assert (tmp_path / "m.zip").exists()
    assert "PPOPenalty on CartPole-v1 after 2048 steps: mean evaluation return" in capsys.readouterr().out
