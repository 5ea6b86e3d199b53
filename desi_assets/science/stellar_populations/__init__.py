"""Stellar populations: BC03 synthesis, synthetic photometry, and posterior fits of mass, SFR, age, dust (pure numpy)."""
