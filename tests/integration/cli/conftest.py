from tests.fixtures.anvil import anvil_chain  # noqa: F401
