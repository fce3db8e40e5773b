from ddp_eval.cli import entry

entry()
