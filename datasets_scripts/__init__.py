"""MELD and IEMOCAP release folders -> datasets.DatasetDict."""
