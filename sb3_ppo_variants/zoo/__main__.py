from sb3_ppo_variants.zoo.cli import main

main()
