"""The load balancer honours the component contract (ready line, health, metrics, drain)."""

from contract import ContractSuite


class TestContract(ContractSuite):
    component = "lb"
    flags = ("--health-interval", "0")
