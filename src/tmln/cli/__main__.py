from tmln.cli import main

main(prog_name="tmln")
