"""Each framework's knobs (the dataclass of its config section) and their plan-time checks, named
by its row in jobs/frameworks.py.

They sit beside the frameworks they judge, in `jobs`, so that the framework table never names a
module of a layer above it; they import neither torch nor the orchestrator (a login node runs them
before anything is submitted) and return the problems as text for the orchestrator to raise.
"""
