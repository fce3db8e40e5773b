from ddp_eval.cli import main

main()
