"""The component contract of DESIGN.md, run against the store."""

from contract import ContractSuite


class TestContract(ContractSuite):
    component = "store"

    def flags_for(self, tmp_path):
        return ["--data-dir", str(tmp_path / "data")]
