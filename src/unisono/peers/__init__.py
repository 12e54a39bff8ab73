"""Peer systems: the other recognisers unisono is measured against and labels data with.

    recognizers      one registry of recognisers built from a spec string ("faster-whisper:beam5",
                     "pocketsphinx", "unisono:DIR", "openai:URL"), used by the data engine, the
                     evaluation harness and the codec's transcript texts
    openai_client    one client for OpenAI-compatible servers (transcription and chat), on the
                     official `openai` package
"""
