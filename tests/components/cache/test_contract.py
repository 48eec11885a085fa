from contract import ContractSuite


class TestContract(ContractSuite):
    component = "cache"
    flags = ("-m", "8")
