"""nrm_verify — what checks the NRM core and other people's explainers: exact oracles,
symbolic proofs, law checks, property strategies, a rule validator and peer adapters."""
