# This file is here just to define MlpPolicy/CnnPolicy/MultiInputPolicy
# that work with the proximal policy optimization variants (SB3's actor-critic policies)
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy
