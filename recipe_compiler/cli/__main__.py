import sys

from recipe_compiler.cli import main

sys.exit(main())
