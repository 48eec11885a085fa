"""The component contract of DESIGN.md, run against the shard router."""

from contract import ContractSuite


class TestContract(ContractSuite):
    component = "shard"

    def flags_for(self, tmp_path):
        config = tmp_path / "shards.toml"
        config.write_text('[[groups]]\nname = "g1"\nnodes = ["127.0.0.1:9"]\n'
                          '[tables]\nusers = "id"\n')  # fmt: skip
        return ["--shards", str(config)]
