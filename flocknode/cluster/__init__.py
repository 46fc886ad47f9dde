"""Local clusters for testers: ``flocknode cluster up|status|down|kill|start|logs``."""
