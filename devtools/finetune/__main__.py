import sys

from devtools.finetune.run import main

sys.exit(main())
