from contract import ContractSuite


class TestContract(ContractSuite):
    component = "queue"


class TestContractDurable(ContractSuite):
    """The same contract with a binlog and group commit (-b DIR -f 0)."""

    component = "queue"

    def flags_for(self, tmp_path):
        return ["-b", str(tmp_path / "binlog"), "-f", "0"]
