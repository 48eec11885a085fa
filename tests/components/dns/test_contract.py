"""The DESIGN.md component contract, run against the DNS server."""

from pathlib import Path

from contract import ContractSuite

ZONE = Path(__file__).resolve().parent / "data" / "example.com.zone"


class TestContract(ContractSuite):
    component = "dns"
    flags = ("--zone", str(ZONE))
