"""A corpus of clinic exports in several languages, written in each language's encodings.

Each export is shaped like a real one: a header (in the clinic's language or in
ASCII), 40 rows of patients, doctors, branches and notes that repeat across rows,
with the language's letters spread through names, places and words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

HEADERS = {
    "tr": ["Randevu No", "Şube", "Hasta", "Doktor", "Tarih", "Durum", "İşlemler", "Açıklama"],
    "de": ["Termin Nr", "Filiale", "Patient", "Arzt", "Datum", "Status", "Behandlung", "Notiz"],
    "fr": ["N° RDV", "Clinique", "Patient", "Médecin", "Date", "Statut", "Soins", "Remarque"],
    "es": ["Nº Cita", "Sede", "Paciente", "Médico", "Fecha", "Estado", "Tratamiento", "Nota"],
    "pl": ["Nr wizyty", "Oddział", "Pacjent", "Lekarz", "Data", "Status", "Zabieg", "Uwagi"],
    "cs": ["Číslo", "Pobočka", "Pacient", "Lékař", "Datum", "Stav", "Ošetření", "Poznámka"],
}
ASCII_HEADER = ["id", "branch", "patient", "doctor", "date", "status", "treatments", "notes"]

WORDS: dict[str, dict[str, list[str]]] = {
    "tr": {
        "branch": ["Kadıköy", "Üsküdar", "Beşiktaş", "Şişli", "İstanbul Ataşehir", "Çankaya"],
        "patient": [
            "Ayşe Yılmaz",
            "Mehmet Öztürk",
            "Gülşen Çelik",
            "İsmail Doğan",
            "Şükrü Güneş",
            "Zeynep Kılıç",
            "Hüseyin Aydın",
            "Çağla Şahin",
            "Ömer Akgül",
            "Büşra Ünal",
        ],
        "doctor": ["Dr. Esra Aslan", "Dr. Tuğba Polat", "Dr. Oğuz Erdoğan", "Dr. İlknur Işık"],
        "status": ["Onaylandı", "Bekliyor", "İptal", "Gelmedi", "Tamamlandı"],
        "treatment": ["Diş taşı temizliği", "Kanal tedavisi", "Dolgu", "Çekim", "Kontrol"],
        "note": [
            "Kontrol seansı",
            "Hasta telefonla onayladı",
            "Ağrı şikâyeti var",
            "Ödeme kredi kartıyla",
            "İlk muayene, röntgen çekildi",
            "Randevuya geç kalacağını söyledi",
        ],
    },
    "de": {
        "branch": ["Düsseldorf", "München", "Köln-Mülheim", "Görlitz", "Lüneburg"],
        "patient": [
            "Jürgen Müller",
            "Bärbel Schäfer",
            "Günther Weiß",
            "Sören Köhler",
            "Käthe Groß",
            "Jörg Bäcker",
            "Hannelore Fuß",
            "Ute Öztürk",
        ],
        "doctor": ["Dr. Müller-Lüdenscheidt", "Dr. Schröder", "Dr. Weißmann", "Dr. Jäger"],
        "status": ["bestätigt", "offen", "storniert", "erschienen", "nicht erschienen"],
        "treatment": ["Zahnreinigung", "Füllung", "Wurzelbehandlung", "Kontrolle", "Röntgen"],
        "note": [
            "Patient möchte früheren Termin",
            "Überweisung liegt vor",
            "Schmerzen im Unterkiefer",
            "Rückruf erbeten",
            "Gebühr für Ausfall geprüft",
            "Allergie gegen Penicillin beachten",
        ],
    },
    "fr": {
        "branch": ["Genève", "Besançon", "Orléans", "Nîmes", "Saint-Étienne"],
        "patient": [
            "Françoise Lefèvre",
            "Hélène Dubois",
            "Jérôme Girard",
            "Léa Moreau",
            "Noël Bézier",
            "Gaëlle Rousseau",
            "Benoît Mercier",
            "Zoé Lambert",
        ],
        "doctor": ["Dr Amélie Fournier", "Dr Cédric Brûlé", "Dr Mégane Rivière"],
        "status": ["confirmé", "en attente", "annulé", "terminé", "absent"],
        "treatment": ["détartrage", "plombage", "dévitalisation", "contrôle", "extraction"],
        "note": [
            "Rappel la veille à 18h",
            "Patient très anxieux, prévoir anesthésie",
            "Prise en charge à vérifier",
            "Douleur côté gauche depuis une semaine",
            "Reçu envoyé par courriel",
            "Première consultation, dossier à créer",
        ],
    },
    "es": {
        "branch": ["Peñíscola", "Logroño", "Cádiz", "Málaga", "A Coruña"],
        "patient": [
            "José Peña",
            "María Núñez",
            "Begoña Ibáñez",
            "Íñigo Muñoz",
            "Ramón Gómez",
            "Lucía Martín",
            "Álvaro Sáenz",
            "Sofía Domínguez",
        ],
        "doctor": ["Dra. Inés Cañete", "Dr. Joaquín Bermúdez", "Dra. Nuria Olmedo"],
        "status": ["confirmada", "pendiente", "cancelada", "atendida", "no asistió"],
        "treatment": ["limpieza", "empaste", "endodoncia", "revisión", "extracción"],
        "note": [
            "El paciente llamó para confirmar",
            "Dolor en la muela del juicio",
            "Traer radiografía",
            "Pagó en efectivo",
            "Cita reprogramada por la mañana",
            "Niño de ocho años, acompañado",
        ],
    },
    "pl": {
        "branch": ["Łódź", "Kraków", "Wrocław", "Gdańsk", "Poznań", "Bielsko-Biała"],
        "patient": [
            "Paweł Wiśniewski",
            "Małgorzata Wójcik",
            "Łukasz Kamiński",
            "Agnieszka Dąbrowska",
            "Michał Żak",
            "Zofia Szczęsna",
            "Grzegorz Łuczak",
            "Jadwiga Kołodziej",
        ],
        "doctor": ["dr Joanna Kowalczyk", "dr Bartłomiej Źródło", "dr Elżbieta Nowak"],
        "status": ["potwierdzona", "oczekująca", "odwołana", "zakończona", "nieobecność"],
        "treatment": ["skaling", "wypełnienie", "leczenie kanałowe", "przegląd", "ekstrakcja"],
        "note": [
            "Pacjent prosi o wcześniejszy termin",
            "Ból zęba od tygodnia",
            "Przynieść zdjęcie RTG",
            "Płatność kartą",
            "Dziecko z opiekunem",
            "Uczulenie na lateks – uwaga",
        ],
    },
    "cs": {
        "branch": ["Brno", "Plzeň", "České Budějovice", "Ústí nad Labem", "Hradec Králové"],
        "patient": [
            "Antonín Dvořák",
            "Růžena Nováková",
            "Jiří Černý",
            "Zdeňka Svobodová",
            "Přemysl Kučera",
            "Květa Horáková",
            "Tomáš Říha",
            "Božena Němcová",
        ],
        "doctor": ["MUDr. Šárka Vlčková", "MUDr. Ondřej Křížek", "MUDr. Lubomír Štěpánek"],
        "status": ["potvrzeno", "čeká", "zrušeno", "dokončeno", "nedostavil se"],
        "treatment": ["dentální hygiena", "výplň", "ošetření kořene", "prohlídka", "extrakce"],
        "note": [
            "Pacient žádá dřívější termín",
            "Bolest zubu vlevo nahoře",
            "Přinést rentgenový snímek",
            "Platba kartou",
            "Dítě v doprovodu matky",
            "Alergie na penicilin – pozor",
        ],
    },
}

ENCODINGS = {
    "tr": ["cp1254", "utf-8", "utf-8-sig"],
    "de": ["cp1252", "latin-1", "utf-8", "utf-8-sig"],
    "fr": ["cp1252", "latin-1", "utf-8", "utf-8-sig"],
    "es": ["cp1252", "latin-1", "utf-8", "utf-8-sig"],
    "pl": ["cp1250", "utf-8", "utf-8-sig"],
    "cs": ["cp1250", "utf-8", "utf-8-sig"],
}
"""The encodings each language's exports come in (what real clinic systems write)."""
SINGLE_BYTE = ("cp1254", "cp1252", "latin-1", "cp1250", "iso-8859-9", "iso-8859-2")
"""Declarations a user might try on any of the files."""


@dataclass(frozen=True)
class Export:
    """One generated export: its language, encoding, header kind, text and bytes."""

    language: str
    encoding: str
    ascii_header: bool
    text: str

    @property
    def data(self) -> bytes:
        return self.text.encode(self.encoding)

    @property
    def name(self) -> str:
        head = "ascii" if self.ascii_header else "native"
        return f"{self.language}-{self.encoding}-{head}.csv"


def export_text(language: str, *, ascii_header: bool, rows: int = 40, seed: int = 21) -> str:
    """A ;-separated export in `language` (the text; the caller encodes it)."""
    rnd = random.Random(f"{language}-{seed}")
    w = WORDS[language]
    header = ASCII_HEADER if ascii_header else HEADERS[language]
    lines = [";".join(header)]
    for i in range(rows):
        treatments = ", ".join(rnd.sample(w["treatment"], 1 + i % 2))
        lines.append(
            ";".join(
                [
                    str(1000 + i),
                    rnd.choice(w["branch"]),
                    rnd.choice(w["patient"]),
                    rnd.choice(w["doctor"]),
                    f"{1 + i % 28:02d}.12.2026 {9 + i % 8:02d}:{(i % 4) * 15:02d}",
                    rnd.choice(w["status"]),
                    treatments,
                    rnd.choice(w["note"]) if i % 3 else "",
                ]
            )
        )
    return "\r\n".join(lines) + "\r\n"


def corpus() -> list[Export]:
    """Every language in each of its encodings, with native and with ASCII headers."""
    return [
        Export(lang, enc, ascii_header, export_text(lang, ascii_header=ascii_header))
        for lang, encodings in ENCODINGS.items()
        for enc in encodings
        for ascii_header in (False, True)
    ]
