from loaxa.cli import app

app(prog_name="loaxa")
