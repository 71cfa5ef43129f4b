"""One module per `edgecnn` subcommand: options mapped to one library call, results printed."""
