"""The bodies of the corpus entry points (`python -m beam_pipelines.<name>`): each builds its Beam
graph and runs it. The entry modules check the composition first and import these afterwards,
because Beam takes seconds to import and a bad override must fail before that."""
