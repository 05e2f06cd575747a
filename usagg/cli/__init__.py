"""The Typer command-line interface: a thin layer over spec, plan, engine, store and analysis.

Command modules import torch, matplotlib and scipy only inside the commands
that need them, so `usagg --help` stays instant.
"""
