"""The response cache: answers kept across jobs and output directories, so none is paid twice."""
