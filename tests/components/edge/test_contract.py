"""The component contract of DESIGN.md, for the edge (an origin address is all it needs)."""

from contract import ContractSuite


class TestContract(ContractSuite):
    component = "edge"
    # Nothing listens on port 9 (discard) on loopback; the contract never reaches it.
    flags = ("--origin", "127.0.0.1:9", "--memory-mb", "8")
