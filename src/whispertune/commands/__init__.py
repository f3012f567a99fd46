"""One module per `whispertune` subcommand; each defines `register(subparsers)`."""
