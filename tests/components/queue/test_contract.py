from contract import ContractSuite


class TestContract(ContractSuite):
    component = "queue"
