"""containerlab: read and write its topology files (files), import one as a compose file (importing), export a
project as one (exporting)."""
