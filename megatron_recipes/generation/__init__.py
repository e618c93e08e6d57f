"""Generation shared by rollouts and evaluation: `interface.py` defines SamplingParams, Generation,
the Generator protocol and the generator registry."""
