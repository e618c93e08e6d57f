"""Generation shared by rollouts and evaluation.

- interface.py: SamplingParams, Generation, the Generator protocol and the generator registry
  (`register_generator`, `build_generator`).
- megatron.py: `MegatronGenerator`, batched KV-cache sampling from a megatron-core GPTModel
  (registered as `megatron`; `build_megatron_generator(checkpoint=...)` builds one from a checkpoint).
- logprobs.py: the policy distribution (temperature, real vocabulary) over tensor-parallel logits,
  shared by the sampler and the GRPO loss.
- tokenizer.py: `TextTokenizer` / `load_text_tokenizer`, the encoding rules of pretraining.
"""
