"""The component contract (DESIGN.md) for the web tier."""

from contract import ContractSuite


class TestContract(ContractSuite):
    component = "web"

    def flags_for(self, tmp_path):
        return ["--db", f"sqlite:{tmp_path / 'contract.db'}", "--seed-users", "10"]
