"""tailor: compress a family of LLMs by cutting and stitching transformer layers.

Data flows one way: text -> parse -> Recipe -> check -> lower -> Plan -> execute.
"""

__version__ = "0.1.0"
