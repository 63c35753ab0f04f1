"""Views of one corpus under many criteria: maps, self-organising maps, named clusters, method agreement.

Pure estimators on arrays live in :mod:`.agreement`, :mod:`.tste`, :mod:`.som`,
:mod:`.clusters`; :mod:`.spaces` reads the store and caches; :mod:`.build` puts them
together; :mod:`.page` writes the interactive HTML page and its JSON.
"""
