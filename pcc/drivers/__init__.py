"""The drivers: what combines stages (compile, opt, check, the seed's ``PentaryProcessor`` facade, the demo).

The core (:mod:`pcc` proper) and the stages (frontends, passes, backend, runtime, trainer) never import this
package; the command line (:mod:`pcc.cli`) and users do.  Importing it registers the built-in passes.
"""

import pcc.passes  # noqa: F401  (registers every pass with the pass manager)
