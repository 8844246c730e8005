"""Synthetic, realistic-looking occurrence records for demos and benchmarks.

:func:`synthetic_archive` builds N records column by column with numpy (no Python loop per
record) as the same verbatim tables a real archive gives, so they go through the same
derivation as real data. The records look like a natural-history collection's: a real
taxonomy (maples, oaks, pines, mammals, birds, fish, insects, fungi), countries with their
ISO codes and coordinates inside them, collection dates over two centuries, institution and
catalogue numbers, collectors. Columns are sparse the way real data is, about a third of the
records have one to three Audubon Core media records, and a small share carry the faults
real data has (unparseable or out-of-range dates, coordinates at 0,0 or out of range), so
the index flags appear. The same ``count`` and ``seed`` always give the same records.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from downloader.ingest.read import ID_COLUMN, ROW_COLUMN, VerbatimArchive

# One taxon a line: kingdom|phylum|class|order|family|genus|epithet|authorship|vernacular name.
_TAXA_TEXT = """
Plantae|Tracheophyta|Magnoliopsida|Sapindales|Sapindaceae|Acer|rubrum|L.|red maple
Plantae|Tracheophyta|Magnoliopsida|Sapindales|Sapindaceae|Acer|saccharum|Marshall|sugar maple
Plantae|Tracheophyta|Magnoliopsida|Sapindales|Sapindaceae|Acer|platanoides|L.|Norway maple
Plantae|Tracheophyta|Magnoliopsida|Sapindales|Sapindaceae|Acer|negundo|L.|box elder
Plantae|Tracheophyta|Magnoliopsida|Fagales|Fagaceae|Quercus|alba|L.|white oak
Plantae|Tracheophyta|Magnoliopsida|Fagales|Fagaceae|Quercus|robur|L.|pedunculate oak
Plantae|Tracheophyta|Magnoliopsida|Fagales|Fagaceae|Quercus|virginiana|Mill.|southern live oak
Plantae|Tracheophyta|Magnoliopsida|Fagales|Betulaceae|Betula|pendula|Roth|silver birch
Plantae|Tracheophyta|Pinopsida|Pinales|Pinaceae|Pinus|strobus|L.|eastern white pine
Plantae|Tracheophyta|Pinopsida|Pinales|Pinaceae|Pinus|sylvestris|L.|Scots pine
Plantae|Tracheophyta|Magnoliopsida|Asterales|Asteraceae|Helianthus|annuus|L.|common sunflower
Plantae|Tracheophyta|Magnoliopsida|Asterales|Asteraceae|Aster|amellus|L.|European Michaelmas daisy
Plantae|Tracheophyta|Magnoliopsida|Rosales|Rosaceae|Rosa|canina|L.|dog rose
Plantae|Tracheophyta|Liliopsida|Poales|Poaceae|Poa|annua|L.|annual meadow grass
Plantae|Bryophyta|Bryopsida|Hypnales|Hypnaceae|Hypnum|cupressiforme|Hedw.|cypress-leaved plait-moss
Animalia|Chordata|Mammalia|Carnivora|Ursidae|Ursus|arctos|Linnaeus, 1758|brown bear
Animalia|Chordata|Mammalia|Carnivora|Canidae|Canis|lupus|Linnaeus, 1758|grey wolf
Animalia|Chordata|Mammalia|Rodentia|Sciuridae|Sciurus|carolinensis|Gmelin, 1788|eastern gray squirrel
Animalia|Chordata|Mammalia|Chiroptera|Vespertilionidae|Myotis|lucifugus|(Le Conte, 1831)|little brown bat
Animalia|Chordata|Aves|Passeriformes|Passeridae|Passer|domesticus|(Linnaeus, 1758)|house sparrow
Animalia|Chordata|Aves|Passeriformes|Turdidae|Turdus|migratorius|Linnaeus, 1766|American robin
Animalia|Chordata|Aves|Strigiformes|Strigidae|Bubo|virginianus|(Gmelin, 1788)|great horned owl
Animalia|Chordata|Actinopterygii|Salmoniformes|Salmonidae|Salmo|trutta|Linnaeus, 1758|brown trout
Animalia|Chordata|Actinopterygii|Salmoniformes|Salmonidae|Oncorhynchus|mykiss|(Walbaum, 1792)|rainbow trout
Animalia|Chordata|Actinopterygii|Gadiformes|Gadidae|Gadus|morhua|Linnaeus, 1758|Atlantic cod
Animalia|Chordata|Actinopterygii|Tetraodontiformes|Ostraciidae|Lactoria|cornuta|(Linnaeus, 1758)|longhorn cowfish
Animalia|Chordata|Actinopterygii|Perciformes|Centrarchidae|Lepomis|macrochirus|Rafinesque, 1819|bluegill
Animalia|Chordata|Amphibia|Anura|Ranidae|Rana|temporaria|Linnaeus, 1758|common frog
Animalia|Chordata|Reptilia|Testudines|Cheloniidae|Chelonia|mydas|(Linnaeus, 1758)|green sea turtle
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Danaus|plexippus|(Linnaeus, 1758)|monarch butterfly
Animalia|Arthropoda|Insecta|Hymenoptera|Apidae|Apis|mellifera|Linnaeus, 1758|western honey bee
Animalia|Arthropoda|Insecta|Coleoptera|Coccinellidae|Coccinella|septempunctata|Linnaeus, 1758|seven-spot ladybird
Animalia|Mollusca|Gastropoda|Stylommatophora|Helicidae|Cornu|aspersum|(O.F.Müller, 1774)|garden snail
Fungi|Basidiomycota|Agaricomycetes|Agaricales|Amanitaceae|Amanita|muscaria|(L.) Lam.|fly agaric
Fungi|Basidiomycota|Agaricomycetes|Boletales|Boletaceae|Boletus|edulis|Bull.|penny bun
"""  # noqa: E501  (a data table: one taxon a line reads better than wrapped lines)
TAXA: tuple[tuple[str, ...], ...] = tuple(
    tuple(line.split("|")) for line in _TAXA_TEXT.strip().splitlines()
)

# One country a line: name|ISO code|continent|lat min, lat max, lon min, lon max|states.
_COUNTRIES_TEXT = """
United States|US|North America|30.0, 47.0, -120.0, -75.0|Florida; Texas; California; New York; Michigan; Oregon
Canada|CA|North America|43.0, 58.0, -125.0, -65.0|Ontario; Quebec; British Columbia; Alberta
Mexico|MX|North America|16.0, 30.0, -110.0, -90.0|Oaxaca; Chiapas; Jalisco
Brazil|BR|South America|-30.0, -3.0, -60.0, -38.0|Amazonas; Bahia; São Paulo
Argentina|AR|South America|-50.0, -25.0, -70.0, -58.0|Mendoza; Córdoba; Salta
United Kingdom|GB|Europe|50.5, 57.5, -5.0, 1.5|England; Scotland; Wales
France|FR|Europe|43.5, 50.5, -1.0, 7.0|Bretagne; Provence-Alpes-Côte d'Azur; Normandie
Germany|DE|Europe|48.0, 54.5, 6.5, 14.5|Bayern; Sachsen; Hessen
Sweden|SE|Europe|56.0, 67.0, 12.0, 22.0|Uppsala; Skåne; Norrbotten
Kenya|KE|Africa|-4.0, 4.0, 34.5, 41.0|Nairobi; Mombasa; Kisumu
South Africa|ZA|Africa|-34.0, -23.0, 18.0, 31.0|Western Cape; Limpopo; KwaZulu-Natal
Japan|JP|Asia|31.0, 43.0, 130.0, 145.0|Hokkaido; Kagoshima; Nagano
India|IN|Asia|9.0, 30.0, 70.0, 88.0|Kerala; Assam; Maharashtra
Australia|AU|Oceania|-38.0, -12.0, 115.0, 150.0|Queensland; Victoria; Western Australia
New Zealand|NZ|Oceania|-46.0, -35.0, 167.0, 178.0|Canterbury; Otago; Waikato
"""  # noqa: E501  (a data table: one country a line)


def _country(line: str) -> tuple[str, str, str, tuple[float, ...], tuple[str, ...]]:
    name, code, continent, box, states = line.split("|")
    return name, code, continent, tuple(float(x) for x in box.split(",")), tuple(states.split("; "))


COUNTRIES = tuple(_country(line) for line in _COUNTRIES_TEXT.strip().splitlines())

# institution code, collection code, institution name
INSTITUTIONS: tuple[tuple[str, str, str], ...] = (
    ("FLMNH", "Herbarium", "Florida Museum of Natural History"),
    ("MCZ", "Ornithology", "Museum of Comparative Zoology, Harvard University"),
    ("NHMUK", "BOT", "Natural History Museum, London"),
    ("MNHN", "P", "Muséum national d'Histoire naturelle"),
    ("USNM", "Fishes", "Smithsonian National Museum of Natural History"),
    ("CAS", "ICH", "California Academy of Sciences"),
    ("KU", "Mammals", "University of Kansas Biodiversity Institute"),
    ("AM", "Entomology", "Australian Museum"),
)

COLLECTORS = (
    "A. Gray",
    "J. D. Hooker",
    "M. L. Fernald",
    "E. O. Wilson",
    "R. Brown; F. Bauer",
    "M. Mejía",
    "S. Ōtani",
    "H. Nilsson",
    "K. S. Misra",
    "C. Darwin",
    "B. McClintock",
    "L. Nkosi",
)
BASIS = (
    "PreservedSpecimen",
    "PreservedSpecimen",
    "PreservedSpecimen",
    "HumanObservation",
    "FossilSpecimen",
    "MaterialSample",
)
HABITATS = (
    "mixed hardwood forest",
    "along stream bank",
    "roadside ditch",
    "coastal dunes",
    "rocky slope",
    "oak savanna",
    "freshwater lake",
    "coral reef",
)
PLACES = ("near", "5 km N of", "2 mi W of", "along trail to", "summit of", "shore of")
LANDMARKS = ("Mill Creek", "Mount Hope", "Lake Sorrow", "Pine Ridge", "Old Quarry", "Bay")
TYPE_STATUS = ("Holotype", "Isotype", "Paratype", "Syntype")
LICENSES = (
    "https://creativecommons.org/licenses/by/4.0/",
    "https://creativecommons.org/licenses/by-nc/4.0/",
    "https://creativecommons.org/publicdomain/zero/1.0/",
)


def _pick(rng: np.random.Generator, values: tuple[str, ...] | list[str], n: int) -> pa.Array:
    """N values drawn uniformly from ``values``, as an Arrow string array."""
    return pa.array(values, pa.string()).take(pa.array(rng.integers(0, len(values), n)))


def _keep(array: pa.Array, mask: np.ndarray) -> pa.Array:
    """``array`` with nulls where ``mask`` is False."""
    return pc.if_else(pa.array(mask), array, pa.scalar(None, pa.string()))


def _str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _pad(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(_str(values), width, "0")


def synthetic_tables(  # noqa: PLR0915  (one statement per synthetic column, in the order of the archive)
    count: int, *, seed: int = 0, offset: int = 0, rng: np.random.Generator | None = None
) -> tuple[pa.Table, pa.Table]:
    """(core, media) verbatim tables of ``count`` synthetic records and their media; the
    records' serial numbers start after ``offset`` (for chunks of one recordset)."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    n = count
    t = rng.integers(0, len(TAXA), n)
    taxa = list(zip(*TAXA, strict=True))
    tax = [pa.array(col, pa.string()).take(pa.array(t)) for col in taxa]
    kingdom, phylum, klass, order, family, genus, epithet, author, vernacular = tax
    sci = pc.binary_join_element_wise(genus, epithet, author, " ")

    c = rng.integers(0, len(COUNTRIES), n)
    cols = list(zip(*COUNTRIES, strict=True))
    country = pa.array(cols[0], pa.string()).take(pa.array(c))
    code = pa.array(cols[1], pa.string()).take(pa.array(c))
    continent = pa.array(cols[2], pa.string()).take(pa.array(c))
    boxes = np.array(cols[3], dtype=float)[c]
    lat = np.round(boxes[:, 0] + rng.random(n) * (boxes[:, 1] - boxes[:, 0]), 5)
    lon = np.round(boxes[:, 2] + rng.random(n) * (boxes[:, 3] - boxes[:, 2]), 5)
    s_index = rng.integers(0, 64, n)
    state_lists = cols[4]
    states = [s[i % len(s)] for s in state_lists for i in range(64)]
    state = pa.array(states, pa.string()).take(pa.array(c * 64 + s_index))

    i = rng.integers(0, len(INSTITUTIONS), n)
    inst = list(zip(*INSTITUTIONS, strict=True))
    inst_code = pa.array(inst[0], pa.string()).take(pa.array(i))
    coll_code = pa.array(inst[1], pa.string()).take(pa.array(i))
    serial = np.arange(1, n + 1) + offset + seed * 10_000_000
    catalog = _join(inst_code, "-", _pad(serial, 7))
    occurrence_id = _join("urn:catalog:", inst_code, ":", coll_code, ":", _pad(serial, 7))

    # Dates: mostly full ISO dates, some partial, some ranges, some only year/month/day
    # columns, and a few faulty ones.
    year = rng.integers(1820, 2024, n)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 29, n)
    iso = _join(_str(year), "-", _pad(month, 2), "-", _pad(day, 2))
    form = rng.random(n)
    event = iso
    event = pc.if_else(pa.array(form < 0.10), _join(_str(year), "-", _pad(month, 2)), event)
    event = pc.if_else(pa.array((form >= 0.10) & (form < 0.15)), _str(year), event)
    later = _join(_str(year), "-", _pad(month, 2), "-", _pad(np.minimum(day + 3, 28), 2))
    event = pc.if_else(pa.array((form >= 0.15) & (form < 0.20)), _join(iso, "/", later), event)
    bad = rng.random(n)
    event = pc.if_else(pa.array(bad < 0.005), pa.scalar("unknown date"), event)
    event = pc.if_else(
        pa.array((bad >= 0.005) & (bad < 0.008)), _join("1066-", _pad(month, 2), "-01"), event
    )
    event = pc.if_else(pa.array((bad >= 0.008) & (bad < 0.010)), pa.scalar("2999-01-01"), event)
    no_event = (form >= 0.20) & (form < 0.30)
    has_ymd = rng.random(n) < 0.6
    lat_s, lon_s = _str(lat), _str(lon)
    coord_fault = rng.random(n)
    lat_s = pc.if_else(pa.array(coord_fault < 0.004), pa.scalar("0"), lat_s)
    lon_s = pc.if_else(pa.array(coord_fault < 0.004), pa.scalar("0"), lon_s)
    lat_s = pc.if_else(
        pa.array((coord_fault >= 0.004) & (coord_fault < 0.007)), _str(lat + 100.0), lat_s
    )
    lon_s = pc.if_else(
        pa.array((coord_fault >= 0.007) & (coord_fault < 0.008)), pa.scalar("12°30'W"), lon_s
    )
    has_coords = rng.random(n) < 0.7

    locality = _join(_pick(rng, PLACES, n), " ", _pick(rng, LANDMARKS, n), ", ", state)
    elevation = rng.gamma(2.0, 300.0, n).round(0)
    collector = _pick(rng, COLLECTORS, n)
    record_number = _str(rng.integers(1, 20000, n))
    r = rng.random((12, n))
    core = pa.table(
        {
            ID_COLUMN: occurrence_id,
            ROW_COLUMN: pa.array(np.arange(n, dtype=np.int64)),
            "dwc:occurrenceID": occurrence_id,
            "dwc:basisOfRecord": _pick(rng, BASIS, n),
            "dwc:institutionCode": inst_code,
            "dwc:collectionCode": coll_code,
            "dwc:catalogNumber": catalog,
            "dwc:kingdom": _keep(kingdom, r[0] < 0.9),
            "dwc:phylum": _keep(phylum, r[0] < 0.7),
            "dwc:class": _keep(klass, r[0] < 0.75),
            "dwc:order": _keep(order, r[0] < 0.8),
            "dwc:family": _keep(family, r[0] < 0.95),
            "dwc:genus": _keep(genus, r[1] < 0.8),
            "dwc:specificEpithet": _keep(epithet, r[1] < 0.7),
            "dwc:scientificName": sci,
            "dwc:scientificNameAuthorship": _keep(author, r[2] < 0.4),
            "dwc:vernacularName": _keep(vernacular, r[2] < 0.2),
            "dwc:taxonRank": _keep(pa.array(["species"] * n, pa.string()), r[3] < 0.5),
            "dwc:country": _keep(country, r[4] < 0.9),
            "dwc:countryCode": _keep(code, r[4] < 0.8),
            "dwc:continent": _keep(continent, r[4] < 0.3),
            "dwc:stateProvince": _keep(state, r[5] < 0.7),
            "dwc:locality": _keep(locality, r[5] < 0.85),
            "dwc:habitat": _keep(_pick(rng, HABITATS, n), r[6] < 0.3),
            "dwc:decimalLatitude": _keep(lat_s, has_coords),
            "dwc:decimalLongitude": _keep(lon_s, has_coords),
            "dwc:geodeticDatum": _keep(
                pa.array(["WGS84"] * n, pa.string()), has_coords & (r[6] < 0.6)
            ),
            "dwc:coordinateUncertaintyInMeters": _keep(
                _str(rng.integers(1, 50, n) * 100), has_coords & (r[7] < 0.4)
            ),
            "dwc:minimumElevationInMeters": _keep(_str(elevation), r[7] < 0.25),
            "dwc:eventDate": _keep(event, ~no_event),
            "dwc:year": _keep(_str(year), has_ymd | no_event),
            "dwc:month": _keep(_str(month), has_ymd & ~no_event),
            "dwc:day": _keep(_str(day), has_ymd & ~no_event),
            "dwc:recordedBy": _keep(collector, r[8] < 0.85),
            "dwc:recordNumber": _keep(record_number, r[8] < 0.5),
            "dwc:individualCount": _keep(_str(rng.integers(1, 12, n)), r[9] < 0.3),
            "dwc:typeStatus": _keep(_pick(rng, TYPE_STATUS, n), r[9] < 0.01),
            "dwc:preparations": _keep(
                _pick(rng, ("sheet", "skin", "alcohol", "pinned", "skeleton"), n), r[10] < 0.4
            ),
            "dcterms:license": _keep(_pick(rng, LICENSES, n), r[11] < 0.5),
        }
    )

    # Media: about a third of the records have one to three images.
    with_media = np.flatnonzero(rng.random(n) < 1 / 3)
    per_record = rng.integers(1, 4, with_media.size)
    parents = np.repeat(with_media, per_record)
    m = parents.size
    nth = np.arange(m) - np.repeat(np.cumsum(per_record) - per_record, per_record) + 1
    parent_ids = occurrence_id.take(pa.array(parents))
    parent_catalog = catalog.take(pa.array(parents))
    parent_inst = inst_code.take(pa.array(parents))
    url = _join(
        "https://media.example.org/", pc.utf8_lower(parent_inst), "/", parent_catalog, "_",
        _str(nth), ".jpg",
    )  # fmt: skip
    mr = rng.random((4, m))
    media = pa.table(
        {
            ID_COLUMN: parent_ids,
            ROW_COLUMN: pa.array(np.arange(m, dtype=np.int64)),
            "ac:accessURI": url,
            "dcterms:format": pa.array(["image/jpeg"] * m, pa.string()),
            "dc:type": pa.array(["StillImage"] * m, pa.string()),
            "dcterms:rights": _keep(_pick(rng, LICENSES, m), mr[0] < 0.8),
            "ac:tag": _keep(
                _pick(rng, ("habit", "label", "detail of leaf", "dorsal view"), m), mr[1] < 0.3
            ),
            "exif:PixelXDimension": _keep(_str(rng.integers(8, 40, m) * 100), mr[2] < 0.5),
            "exif:PixelYDimension": _keep(_str(rng.integers(8, 40, m) * 100), mr[2] < 0.5),
            "dcterms:modified": _keep(
                _join(_str(rng.integers(2005, 2024, m)), "-06-01"), mr[3] < 0.4
            ),
        }
    )
    return core, media


#: Records generated at a time by :func:`synthetic_chunks` (memory stays flat beyond it).
SYNTHETIC_CHUNK = 50_000


def synthetic_chunks(
    count: int, *, seed: int = 0, chunk: int = SYNTHETIC_CHUNK
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """``count`` synthetic records as (core, media) chunks of at most ``chunk`` records.

    The first chunk is exactly :func:`synthetic_tables` (``count``, ``seed``), so a store of
    up to ``chunk`` records is the same whichever way it is made; later chunks draw from
    their own seeded generators and continue the serial numbers.
    """
    done = 0
    k = 0
    while k == 0 or done < count:
        n = min(chunk, count - done)
        rng = np.random.default_rng(seed if k == 0 else [seed, k])
        yield synthetic_tables(n, seed=seed, offset=done, rng=rng)
        done += n
        k += 1


def synthetic_archive(
    count: int, *, seed: int = 0, recordset_id: str | None = None
) -> VerbatimArchive:
    """``count`` synthetic records (and their media) as one recordset."""
    if count < 0:
        raise ValueError("the number of synthetic records must not be negative")
    core, media = synthetic_tables(count, seed=seed)
    return VerbatimArchive(
        source=f"synthetic:{count}:seed={seed}",
        recordset_id=recordset_id or f"synthetic-seed-{seed}",
        name=f"Synthetic records (seed {seed})",
        eml=None,
        core=core,
        media=media,
    )
