from sb3_ppo_variants.quickstart import main


def test_quickstart_learns(tmp_path, capsys):
    before, after = main(["--timesteps", "4096", "--eval-episodes", "5", "--no-progress-bar", "--save", str(tmp_path / "m")])
    # The untrained policy of seed 1 drops the pole within about 10 steps; a few updates keep it up for hundreds
    assert before < 20
    assert after >= 100
    assert (tmp_path / "m.zip").exists()
    assert f"PPOPenalty on CartPole-v1: mean evaluation return {before:.1f} untrained, {after:.1f}" in capsys.readouterr().out
