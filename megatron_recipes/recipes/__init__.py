"""The bodies of the training entry points (`python -m megatron_recipes.<name>`): plan a run,
then set it up, train and tear down. The entry modules check the composition first and import
these afterwards, because torch and megatron-core take seconds to import and a bad override must
fail before that."""
