from tmln.cli import main  # `python -m tmln` (torchrun -m tmln ...)

main(prog_name="tmln")
